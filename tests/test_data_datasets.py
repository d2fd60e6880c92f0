"""Dataset catalog, DensePose-COCO JSON loading (and its errors), built-in registrations."""
import json
import logging

import pytest

from densepose_fnl.data import (
    DatasetCatalog,
    MetadataCatalog,
    ensure_synthetic_dataset,
    get_detection_dataset_dicts,
    load_densepose_coco_json,
)
from densepose_fnl.data.datasets import DENSEPOSE_COCO_DATASETS


def _dp(n=3):
    return {
        "dp_x": [10.0, 20.0, 30.0][:n], "dp_y": [5.0, 6.0, 7.0][:n], "dp_I": [1.0, 2.0, 3.0][:n],
        "dp_U": [0.1, 0.2, 0.3][:n], "dp_V": [0.4, 0.5, 0.6][:n], "dp_masks": [[] for _ in range(14)],
    }  # fmt: skip


def coco_json(**overrides):
    data = {
        "images": [
            {"id": 3, "file_name": "b.jpg", "height": 40, "width": 60},
            {"id": 1, "file_name": "a.jpg", "height": 30, "width": 50},
            {"id": 2, "file_name": "c.jpg", "height": 30, "width": 50},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0, "area": 200, **_dp()},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [5, 5, 8, 8], "iscrowd": 0, "area": 64},
            {"id": 12, "image_id": 3, "category_id": 1, "bbox": [0, 0, 30, 30], "iscrowd": 1, "area": 900},
            {"id": 13, "image_id": 3, "category_id": 1, "bbox": [0, 0, 0, 30], "iscrowd": 0, "area": 0},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    data.update(overrides)
    return data


def _write(tmp_path, data, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_catalog_register_get_list_and_errors():
    calls = []
    DatasetCatalog.register("_t_cat", lambda: calls.append(1) or [{"file_name": "x"}])
    try:
        assert "_t_cat" in DatasetCatalog.list()
        assert DatasetCatalog.get("_t_cat") == [{"file_name": "x"}] and calls == [1]
        with pytest.raises(KeyError, match="already registered"):
            DatasetCatalog.register("_t_cat", list)
        with pytest.raises(KeyError, match="'_t_missing' is not registered.*densepose_coco_2014_train"):
            DatasetCatalog.get("_t_missing")
        meta = MetadataCatalog.get("_t_cat").set(thing_classes=["person"])
        assert MetadataCatalog.get("_t_cat") is meta and meta.thing_classes == ["person"]
        assert meta.get("nothing", 5) == 5
        with pytest.raises(AttributeError, match="no attribute 'nothing'"):
            meta.nothing
    finally:
        DatasetCatalog.remove("_t_cat")
        MetadataCatalog.remove("_t_cat")


def test_builtin_names_registered():
    names = DatasetCatalog.list()
    for n in (
        "densepose_coco_2014_train", "densepose_coco_2014_valminusminival", "densepose_coco_2014_minival",
        "densepose_coco_2014_minival_100", "densepose_synthetic_train", "densepose_synthetic_val",
    ):  # fmt: skip
        assert n in names
    assert DENSEPOSE_COCO_DATASETS["densepose_coco_2014_minival"] == (
        "coco/val2014", "coco/annotations/densepose_minival2014.json")  # fmt: skip


def _images(folder, names=("a.jpg", "b.jpg", "c.jpg")):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")  # the loader only checks that they exist
    return str(folder)


def test_load_json_to_dataset_dicts(tmp_path, caplog):
    f = _write(tmp_path, coco_json(categories=[{"id": 1, "name": "person"}, {"id": 7, "name": "other"}]))
    _images(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING):
        dicts = load_densepose_coco_json(f, str(tmp_path / "imgs"), "_t_json")
    assert [d["image_id"] for d in dicts] == [1, 2, 3]  # sorted
    d1 = dicts[0]
    assert d1["file_name"] == str(tmp_path / "imgs" / "a.jpg") and (d1["height"], d1["width"]) == (30, 50)
    a, b = d1["annotations"]
    assert a["bbox"] == [1.0, 2.0, 10.0, 20.0] and a["bbox_mode"] == "XYWH_ABS"
    assert a["category_id"] == 0 and a["iscrowd"] == 0 and a["dp_I"] == [1.0, 2.0, 3.0] and len(a["dp_masks"]) == 14
    assert "dp_x" not in b and b["id"] == 11  # box-only kept
    assert dicts[1]["annotations"] == []
    crowd = dicts[2]["annotations"]
    assert len(crowd) == 1 and crowd[0]["iscrowd"] == 1  # crowd kept, empty box skipped
    assert "skipped 1 annotation(s) with an empty box" in caplog.text
    meta = MetadataCatalog.get("_t_json")
    assert meta.thing_classes == ["person", "other"] and meta.thing_dataset_id_to_contiguous_id == {1: 0, 7: 1}
    MetadataCatalog.remove("_t_json")


def test_images_missing_on_disk_are_an_error_naming_count_and_first(tmp_path):
    f = _write(tmp_path, coco_json())
    _images(tmp_path / "imgs", ("a.jpg", "c.jpg"))
    with pytest.raises(FileNotFoundError, match=r"'mine': 1 of 3 images of .*ann\.json are not on disk under "
                                                r".*imgs \(first: .*b\.jpg\)"):
        load_densepose_coco_json(f, str(tmp_path / "imgs"), "mine")


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'dsx'.*nothere\.json.*DENSEPOSE_DATASETS"):
        load_densepose_coco_json(str(tmp_path / "nothere.json"), str(tmp_path), "dsx")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json: annotation file is not valid JSON: .* line 1 column 2"):
        load_densepose_coco_json(str(tmp_path / "broken.json"), str(tmp_path))
    f = _write(tmp_path, {"images": []}, "partial.json")
    with pytest.raises(ValueError, match=r"partial\.json lacks the COCO list\(s\) \['annotations', 'categories'\]"):
        load_densepose_coco_json(f, str(tmp_path))


def test_inconsistent_densepose_is_an_error_naming_image_and_annotation(tmp_path):
    data = coco_json()
    data["annotations"][0]["dp_V"] = [0.1]
    f = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"ann\.json: image id 1, annotation id 10: .*unequal lengths"):
        load_densepose_coco_json(f, str(tmp_path))
    data = coco_json()
    del data["annotations"][1]["bbox"]
    with pytest.raises(ValueError, match="image id 1, annotation id 11: missing or malformed bbox"):
        load_densepose_coco_json(_write(tmp_path, data, "nobox.json"), str(tmp_path))
    data = coco_json()
    data["annotations"][0]["dp_masks"] = [[]] * 3
    with pytest.raises(ValueError, match="annotation id 10: dp_masks must be a list of 14"):
        load_densepose_coco_json(_write(tmp_path, data, "masks.json"), str(tmp_path))


def test_builtin_coco_paths_follow_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"densepose_minival2014_100\.json"):
        DatasetCatalog.get("densepose_coco_2014_minival_100")
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    _write(tmp_path / "coco" / "annotations", coco_json(), "densepose_minival2014_100.json")
    _images(tmp_path / "coco" / "val2014")
    dicts = DatasetCatalog.get("densepose_coco_2014_minival_100")
    assert dicts[0]["file_name"] == str(tmp_path / "coco" / "val2014" / "a.jpg")
    meta = MetadataCatalog.get("densepose_coco_2014_minival_100")
    assert meta.densepose_transform_src == str(tmp_path / "densepose_eval_data" / "UV_symmetry_transforms.mat")
    # DETECTRON2_DATASETS is the fallback
    monkeypatch.delenv("DENSEPOSE_DATASETS")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert len(DatasetCatalog.get("densepose_coco_2014_minival_100")) == 3
    # filtering: image 2 has nothing, image 3 only a crowd box
    monkeypatch.setenv("DENSEPOSE_DATASETS", str(tmp_path))
    kept = get_detection_dataset_dicts(["densepose_coco_2014_minival_100"], filter_empty=True)
    assert [d["image_id"] for d in kept] == [1] and kept[0]["dataset"] == "densepose_coco_2014_minival_100"
    both = get_detection_dataset_dicts(("densepose_coco_2014_minival_100",) * 2, filter_empty=False)
    assert len(both) == 6
    with pytest.raises(ValueError, match="No dataset given"):
        get_detection_dataset_dicts([])


def test_synthetic_registration(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(tmp_path / "syn"))
    with pytest.raises(FileNotFoundError, match="generate_synthetic_dataset"):
        DatasetCatalog.get("densepose_synthetic_val")
    ensure_synthetic_dataset(num_train=2, num_val=2, seed=1, min_size=64, max_size=72)
    dicts = DatasetCatalog.get("densepose_synthetic_val")
    assert len(dicts) == 2 and all(d["annotations"] for d in dicts)
    assert dicts[0]["file_name"].startswith(str(tmp_path / "syn" / "val"))
    assert all(a["category_id"] == 0 for d in dicts for a in d["annotations"])
    meta = MetadataCatalog.get("densepose_synthetic_val")
    assert meta.densepose_transform_src == str(tmp_path / "syn" / "UV_symmetry_transforms.mat")
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0}
