"""Mapper (read, resize, flip with DensePose symmetries, targets) and the train / test loaders."""
import itertools
import logging

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import scipy.io
import torch

from densepose_fnl.config import get_cfg
from densepose_fnl.data import (
    DatasetMapper,
    MetadataCatalog,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    ensure_synthetic_dataset,
    get_detection_dataset_dicts,
)
from densepose_fnl.data import mapper as mapper_module
from densepose_fnl.data.transforms import RandomFlip, ResizeShortestEdge, resize_output_shape
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative


def _tables(path, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key in ("U_transforms", "V_transforms"):
        cells = np.empty((1, 24), dtype=object)
        for k in range(24):
            cells[0, k] = rng.random((256, 256))
        out[key] = cells
    scipy.io.savemat(str(path), out)
    return {k: np.stack(list(v[0])) for k, v in out.items()}


def _image(tmp_path, h=40, w=60, name="img.png", color=(255, 0, 0)):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = color
    img[:, : w // 2, 1] = 200  # left half differs, to see flips
    p = tmp_path / name
    cv2.imwrite(str(p), img)
    return str(p)


def _dp_ann():
    m = np.zeros((256, 256), np.uint8)
    m[:, :128] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    masks = [[] for _ in range(14)]
    masks[1] = {"size": [256, 256], "counts": r["counts"].decode()}  # right hand on the left half
    return {
        "id": 1, "bbox": [10.0, 5.0, 20.0, 30.0], "bbox_mode": "XYWH_ABS", "category_id": 0, "iscrowd": 0,
        "dp_x": [10.0, 200.5], "dp_y": [30.0, 40.0], "dp_I": [3.0, 16.0], "dp_U": [0.2, 0.7], "dp_V": [0.9, 0.1],
        "dp_masks": masks,
    }  # fmt: skip


def _dict(tmp_path, anns, dataset="_t_map", **kw):
    f = _image(tmp_path, **kw)
    h, w = cv2.imread(f).shape[:2]
    return {"file_name": f, "height": h, "width": w, "image_id": 9, "dataset": dataset, "annotations": anns}


def _cfg(**kw):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (80,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = 80
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATALOADER.NUM_WORKERS = 0
    for k, v in kw.items():
        node, key = cfg, k.split(".")
        for part in key[:-1]:
            node = getattr(node, part)
        setattr(node, key[-1], v)
    return cfg


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DENSEPOSE_UV_SYMMETRY", raising=False)
    monkeypatch.setenv("DENSEPOSE_DATASETS", str(tmp_path / "no_datasets_here"))
    mapper_module._WARNED_MISSING.clear()


def test_resize_rules():
    assert resize_output_shape(40, 60, 80, 1000) == (80, 120)
    assert resize_output_shape(20, 200, 100, 300) == (30, 300)  # longest side capped
    assert resize_output_shape(60, 40, 80, 1000) == (120, 80)
    rs = ResizeShortestEdge((50, 60), 1000, "range")
    rng = np.random.default_rng(0)
    sizes = {min(rs.get_transform(100, 150, rng).new_h, 1000) for _ in range(200)}
    assert sizes == set(range(50, 61))
    ch = ResizeShortestEdge((64, 96), 1000, "choice")
    assert {ch.get_transform(100, 150, rng).new_h for _ in range(50)} == {64, 96}
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN_SAMPLING"):
        ResizeShortestEdge((1, 2), 10, "uniform")
    with pytest.raises(ValueError, match="exactly two sizes"):
        ResizeShortestEdge((1, 2, 3), 10, "range")


def test_test_mode_shapes_and_format(tmp_path):
    d = _dict(tmp_path, [_dp_ann()])
    out = DatasetMapper(_cfg(), is_train=False)(d)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 80, 120)
    assert (out["height"], out["width"], out["image_id"]) == (40, 60, 9)
    assert "instances" not in out and "annotations" not in out
    assert d["annotations"]  # the input dict is not modified
    assert out["image"][0, 10, 100] == 255 and out["image"][2, 10, 100] == 0  # BGR: blue first
    rgb = DatasetMapper(_cfg(**{"INPUT.FORMAT": "RGB"}), is_train=False)(d)
    assert rgb["image"][2, 10, 100] == 255 and rgb["image"][0, 10, 100] == 0
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        DatasetMapper(_cfg(**{"INPUT.FORMAT": "YUV"}), is_train=False)


def test_train_targets_scale_and_crowd_dropped(tmp_path):
    box_only = {"id": 2, "bbox": [0.0, 0.0, 60.0, 40.0], "bbox_mode": "XYWH_ABS", "category_id": 0, "iscrowd": 0}
    crowd = {"id": 3, "bbox": [1.0, 1.0, 5.0, 5.0], "bbox_mode": "XYWH_ABS", "category_id": 0, "iscrowd": 1}
    out = DatasetMapper(_cfg(), is_train=True)(_dict(tmp_path, [_dp_ann(), crowd, box_only]))
    inst = out["instances"]
    assert inst.image_size == (80, 120) and len(inst) == 2
    torch.testing.assert_close(inst.gt_boxes, torch.tensor([[20.0, 10.0, 60.0, 70.0], [0.0, 0.0, 120.0, 80.0]]))
    assert inst.gt_classes.tolist() == [0, 0] and inst.gt_classes.dtype == torch.long
    dp = inst.gt_densepose[0]
    assert isinstance(dp, DensePoseDataRelative) and inst.gt_densepose[1] is None
    assert dp.x.tolist() == [10.0, 200.5] and dp.i.tolist() == [3, 16]  # relative to the box: unchanged by resize
    assert dp.segm[0, 0] == 2 and dp.segm[0, 200] == 0


def test_flip_mirrors_image_boxes_and_densepose(tmp_path, monkeypatch):
    tables = _tables(tmp_path / "uv.mat", seed=1)
    monkeypatch.setenv("DENSEPOSE_UV_SYMMETRY", str(tmp_path / "uv.mat"))
    m = DatasetMapper(_cfg(**{"INPUT.RANDOM_FLIP": "horizontal"}), is_train=True)
    m.flip = RandomFlip(1.0)
    d = _dict(tmp_path, [_dp_ann()])
    out = m(d)
    plain = DatasetMapper(_cfg(), is_train=False)(d)
    assert torch.equal(out["image"], plain["image"].flip(-1))
    inst = out["instances"]
    torch.testing.assert_close(inst.gt_boxes, torch.tensor([[120 - 60.0, 10.0, 120 - 20.0, 70.0]]))
    dp = inst.gt_densepose[0]
    assert dp.i.tolist() == [4, 15]  # right hand -> left hand, upper arm right front -> left front
    assert dp.x.tolist() == [246.0, 55.5] and dp.y.tolist() == [30.0, 40.0]
    for k, (i, u, v) in enumerate(((3, 0.2, 0.9), (16, 0.7, 0.1))):
        ui, vi = int(u * 255), int(v * 255)
        assert dp.u[k].item() == pytest.approx(tables["U_transforms"][i - 1][vi, ui], abs=1e-6)
        assert dp.v[k].item() == pytest.approx(tables["V_transforms"][i - 1][vi, ui], abs=1e-6)
    assert dp.segm[0, 255] == 3 and dp.segm[0, 0] == 0  # right hand mask mirrored and relabelled left hand


def test_missing_symmetry_file_warns_once_and_keeps_densepose_images_unflipped(tmp_path, caplog):
    MetadataCatalog.get("_t_map").set(densepose_transform_src=str(tmp_path / "absent.mat"))
    m = DatasetMapper(_cfg(**{"INPUT.RANDOM_FLIP": "horizontal"}), is_train=True)
    m.flip = RandomFlip(1.0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            out = m(_dict(tmp_path, [_dp_ann()]))
            torch.testing.assert_close(out["instances"].gt_boxes, torch.tensor([[20.0, 10.0, 60.0, 70.0]]))
            assert out["instances"].gt_densepose[0].i.tolist() == [3, 16]
    assert caplog.text.count("absent.mat") == 1 and "will NOT be flipped" in caplog.text
    box_only = {"id": 2, "bbox": [0.0, 0.0, 10.0, 40.0], "bbox_mode": "XYWH_ABS", "category_id": 0, "iscrowd": 0}
    out = m(_dict(tmp_path, [box_only]))
    torch.testing.assert_close(out["instances"].gt_boxes, torch.tensor([[100.0, 0.0, 120.0, 80.0]]))  # flipped
    MetadataCatalog.remove("_t_map")


def test_explicit_symmetry_env_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_UV_SYMMETRY", str(tmp_path / "gone.mat"))
    with pytest.raises(FileNotFoundError, match="DENSEPOSE_UV_SYMMETRY.*gone.mat"):
        DatasetMapper(_cfg(**{"INPUT.RANDOM_FLIP": "horizontal"}), is_train=True)
    with pytest.raises(ValueError, match="vertical symmetry"):
        DatasetMapper(_cfg(**{"INPUT.RANDOM_FLIP": "vertical"}), is_train=True)


def test_image_errors_name_the_file(tmp_path):
    m = DatasetMapper(_cfg(), is_train=True)
    d = _dict(tmp_path, [])
    with pytest.raises(FileNotFoundError, match=r"Image file not found: .*missing\.jpg"):
        m({**d, "file_name": str(tmp_path / "missing.jpg")})
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ValueError, match=r"Cannot decode image file .*corrupt\.jpg"):
        m({**d, "file_name": str(tmp_path / "corrupt.jpg")})
    with pytest.raises(ValueError, match=r"img\.png is 60x40 \(WxH\) but its dataset entry says 61x40"):
        m({**d, "width": 61})


def test_inconsistent_densepose_in_mapper_names_file_and_annotation(tmp_path):
    ann = _dp_ann()
    ann["dp_U"] = [0.1]
    with pytest.raises(ValueError, match=r"img\.png: annotation id 1: .*unequal lengths"):
        DatasetMapper(_cfg(), is_train=True)(_dict(tmp_path, [ann]))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = ensure_synthetic_dataset(tmp_path_factory.mktemp("syn") / "ds", num_train=6, num_val=3, seed=2,
                                    min_size=64, max_size=80)  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(root))
    yield root
    mp.undo()


def _train_cfg(**kw):
    base = {
        "DATASETS.TRAIN": ("densepose_synthetic_train",), "SOLVER.IMS_PER_BATCH": 2, "SEED": 4,
        "INPUT.MIN_SIZE_TRAIN": (64, 96), "INPUT.MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT.MAX_SIZE_TRAIN": 200,
        "INPUT.RANDOM_FLIP": "horizontal",
    }  # fmt: skip
    base.update(kw)
    return _cfg(**base)


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_train_loader_infinite_seeded_and_flips_with_synthetic_tables(synth, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(synth))
    cfg = _train_cfg()
    batches = _take(build_detection_train_loader(cfg), 7)  # 14 images > 6 in the dataset: wraps around
    assert all(isinstance(b, list) and len(b) == 2 for b in batches)
    ids = [x["image_id"] for b in batches for x in b]
    assert set(ids) == set(range(1, 7))
    for b in batches:
        for x in b:
            inst = x["instances"]
            assert 64 <= min(x["image"].shape[-2:]) <= 96 and inst.image_size == tuple(x["image"].shape[-2:])
            assert len(inst) >= 1 and all(isinstance(d, DensePoseDataRelative) for d in inst.gt_densepose)
            assert (inst.gt_boxes[:, 2:] > inst.gt_boxes[:, :2]).all()
        assert len({x["image"].shape[-1] > x["image"].shape[-2] for x in b}) == 1  # aspect ratio grouping
    again = _take(build_detection_train_loader(cfg), 7)
    assert [x["image_id"] for b in again for x in b] == ids
    assert all(torch.equal(a["image"], c["image"]) for b1, b2 in zip(batches, again) for a, c in zip(b1, b2))
    other = _take(build_detection_train_loader(_train_cfg(SEED=5)), 7)
    assert [x["image_id"] for b in other for x in b] != ids
    # flips happen (the synthetic set ships its own UV symmetry tables): mirrored box of some image
    dicts = {d["image_id"]: d for d in get_detection_dataset_dicts(["densepose_synthetic_train"])}
    flipped = 0
    for x in (x for b in batches for x in b):
        h, w = x["image"].shape[-2:]
        a = dicts[x["image_id"]]["annotations"]
        x0 = sorted(ann["bbox"][0] * w / x["width"] for ann in a)
        x0_flipped = sorted(w - (ann["bbox"][0] + ann["bbox"][2]) * w / x["width"] for ann in a)
        got = sorted(x["instances"].gt_boxes[:, 0].tolist())
        if not np.allclose(got, x0, atol=0.5):
            assert np.allclose(got, x0_flipped, atol=0.5)
            flipped += 1
    assert 0 < flipped < 14


def test_train_loader_with_workers_covers_each_epoch(synth, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(synth))
    cfg = _train_cfg(**{"DATALOADER.NUM_WORKERS": 2, "DATALOADER.ASPECT_RATIO_GROUPING": False})
    batches = _take(build_detection_train_loader(cfg), 6)
    ids = [x["image_id"] for b in batches for x in b]
    # the two workers split the stream (each builds whole batches): 12 items = exactly two epochs
    assert sorted(ids) == sorted(list(range(1, 7)) * 2)
    assert all(len(b) == 2 for b in batches)


def test_sampler_shards_by_rank():
    streams = [list(itertools.islice(iter(TrainingSampler(10, seed=1, rank=r, world_size=2)), 5)) for r in (0, 1)]
    assert sorted(streams[0] + streams[1]) == list(range(10))
    assert streams[0] != list(itertools.islice(iter(TrainingSampler(10, seed=2, rank=0, world_size=2)), 5))


def test_test_loader_in_order_batch_one(synth, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(synth))
    loader = build_detection_test_loader(_cfg(**{"INPUT.MIN_SIZE_TEST": 72}), "densepose_synthetic_val")
    items = list(loader)
    assert len(loader) == 3 and all(len(b) == 1 for b in items)
    assert [b[0]["image_id"] for b in items] == [1, 2, 3]
    assert all(min(b[0]["image"].shape[-2:]) == 72 and "instances" not in b[0] for b in items)
