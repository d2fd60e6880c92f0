"""DensePoseDataRelative, DensePoseList, DensePoseTransformData and annotation validation."""
import pickle
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import scipy.io
import torch

from densepose_fnl.structures import Instances
from densepose_fnl.structures.densepose_annotations import (
    FINE_TO_COARSE,
    DensePoseDataRelative,
    DensePoseList,
    DensePoseTransformData,
    decode_dp_masks,
    has_densepose,
    validate_densepose_annotation,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def write_official_style_mat(path, seed=0):
    """A .mat laid out like the official UV_symmetry_transforms.mat (1x24 cells of 256x256 doubles)."""
    rng = np.random.default_rng(seed)
    tables = {}
    for key in ("U_transforms", "V_transforms"):
        cells = np.empty((1, 24), dtype=object)
        for k in range(24):
            cells[0, k] = rng.random((256, 256))
        tables[key] = cells
    scipy.io.savemat(str(path), tables)
    return {k: np.stack([c for c in v[0]]) for k, v in tables.items()}


def _rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def _ann(n=4):
    masks = [[] for _ in range(14)]
    m1 = np.zeros((256, 256), bool)
    m1[10:100, 20:60] = True  # torso (label 1)
    m2 = np.zeros((256, 256), bool)
    m2[50:120, 40:200] = True  # right hand (label 2) overlaps the torso and overwrites it
    masks[0], masks[1] = _rle(m1), _rle(m2)
    return {
        "id": 7,
        "bbox": [0, 0, 10, 10],
        "dp_x": [30.5, 100.0, 200.0, 250.0][:n],
        "dp_y": [20.0, 60.0, 100.0, 200.0][:n],
        "dp_I": [2.0, 3.0, 16.0, 24.0][:n],
        "dp_U": [0.1, 0.5, 0.9, 1.0][:n],
        "dp_V": [0.2, 0.0, 0.7, 0.3][:n],
        "dp_masks": masks,
    }


def test_from_annotation_types_and_segm_overwrite_order():
    dp = DensePoseDataRelative.from_annotation(_ann())
    assert len(dp) == 4 and dp.i.dtype == torch.long and dp.x.dtype == torch.float32
    assert dp.i.tolist() == [2, 3, 16, 24]
    assert dp.segm.shape == (256, 256) and dp.segm.dtype == torch.long
    assert dp.segm[15, 25] == 1  # torso only
    assert dp.segm[60, 45] == 2  # overlap: the later mask wins
    assert dp.segm[60, 150] == 2 and dp.segm[200, 5] == 0
    assert set(dp.segm.unique().tolist()) == {0, 1, 2}
    moved = dp.to("cpu")
    assert torch.equal(moved.segm, dp.segm) and moved.device.type == "cpu"


def test_has_densepose_and_validation_messages():
    assert has_densepose(_ann()) and not has_densepose({"bbox": [0, 0, 1, 1]})
    validate_densepose_annotation({"bbox": [0, 0, 1, 1]})  # box-only is fine
    bad = _ann()
    bad["dp_U"] = bad["dp_U"][:3]
    with pytest.raises(ValueError, match=r"image 5 ann 7.*unequal lengths.*'dp_U': 3"):
        validate_densepose_annotation(bad, "image 5 ann 7")
    part = {k: v for k, v in _ann().items() if k != "dp_V"}
    with pytest.raises(ValueError, match="lacks \\['dp_V'\\]"):
        validate_densepose_annotation(part)
    wrong_i = _ann()
    wrong_i["dp_I"][0] = 25
    with pytest.raises(ValueError, match="dp_I must be integers in 1..24"):
        validate_densepose_annotation(wrong_i)
    wrong_u = _ann()
    wrong_u["dp_V"][1] = 1.5
    with pytest.raises(ValueError, match="dp_V must be in \\[0, 1\\]"):
        validate_densepose_annotation(wrong_u)
    wrong_masks = _ann()
    wrong_masks["dp_masks"] = wrong_masks["dp_masks"][:13]
    with pytest.raises(ValueError, match="list of 14"):
        validate_densepose_annotation(wrong_masks)
    ok, reason = DensePoseDataRelative.validate_annotation(bad)
    assert not ok and "unequal" in reason
    with pytest.raises(ValueError, match="unequal lengths"):
        DensePoseDataRelative(torch.zeros(3), torch.zeros(3), torch.ones(2), torch.zeros(3), torch.zeros(3))


def test_transform_data_loads_official_layout(tmp_path):
    tables = write_official_style_mat(tmp_path / "uv.mat")
    td = DensePoseTransformData.load(tmp_path / "uv.mat")
    assert td.uv_symmetries["U_transforms"].shape == (24, 256, 256)
    np.testing.assert_allclose(td.uv_symmetries["V_transforms"][5].numpy(), tables["V_transforms"][5], rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        DensePoseTransformData.load(tmp_path / "nope.mat")
    scipy.io.savemat(str(tmp_path / "bad.mat"), {"U_transforms": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"bad\.mat.*'U_transforms' must be a 1x24 cell array"):
        DensePoseTransformData.load(tmp_path / "bad.mat")
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="garbage.mat"):
        DensePoseTransformData.load(tmp_path / "garbage.mat")


def test_hflip_swaps_labels_and_maps_uv_through_tables(tmp_path):
    tables = write_official_style_mat(tmp_path / "uv.mat", seed=3)
    td = DensePoseTransformData.load(tmp_path / "uv.mat")
    ann = _ann()
    dp = DensePoseDataRelative.from_annotation(ann)
    f = dp.hflip(td)
    assert f.x.tolist() == pytest.approx([256 - x for x in ann["dp_x"]])
    assert f.y.tolist() == pytest.approx(ann["dp_y"])
    assert f.i.tolist() == [2, 4, 15, 23]  # torso stays, right hand -> left hand, 16 <-> 15, 24 <-> 23
    for k, (i, u, v) in enumerate(zip(ann["dp_I"], ann["dp_U"], ann["dp_V"])):
        ui, vi = int(u * 255), int(v * 255)
        assert f.u[k].item() == pytest.approx(tables["U_transforms"][int(i) - 1][vi, ui], abs=1e-6)
        assert f.v[k].item() == pytest.approx(tables["V_transforms"][int(i) - 1][vi, ui], abs=1e-6)
    # segm mirrored column-wise and coarse labels swapped (right hand 2 -> left hand 3)
    assert f.segm[60, 255 - 150] == 3 and f.segm[15, 255 - 25] == 1
    assert dp.i.tolist() == [2, 3, 16, 24]  # original untouched


def test_point_and_mask_symmetries_are_involutions_consistent_with_coarse_parts():
    p = np.asarray(DensePoseTransformData.POINT_LABEL_SYMMETRIES)
    m = np.asarray(DensePoseTransformData.MASK_LABEL_SYMMETRIES)
    assert (p[p] == np.arange(25)).all() and (m[m] == np.arange(15)).all()
    f2c = np.asarray(FINE_TO_COARSE)
    np.testing.assert_array_equal(f2c[p], m[f2c])  # flipping then coarsening = coarsening then flipping


def test_densepose_list_follows_instances_indexing():
    a, b = DensePoseDataRelative.from_annotation(_ann(2)), DensePoseDataRelative.from_annotation(_ann(3))
    inst = Instances((10, 10), gt_boxes=torch.zeros(3, 4), gt_densepose=DensePoseList([a, None, b]))
    sub = inst[torch.tensor([True, False, True])]
    assert len(sub) == 2 and sub.gt_densepose[0] is a and sub.gt_densepose[1] is b
    assert inst[torch.tensor([2, 1])].gt_densepose[1] is None
    assert inst[1:].gt_densepose[1] is b
    assert inst[0].gt_densepose[0] is a
    assert len(inst.to("cpu").gt_densepose) == 3
    lst = DensePoseList([a, None, b])
    assert lst[torch.tensor([False, True, True])] == [None, b] and isinstance(lst[1:], DensePoseList)
    assert lst[torch.tensor([2, 0])] == [b, a] and lst[np.array([True, False, False])] == [a]
    assert lst[torch.tensor(2)] is b and lst[-1] is b
    with pytest.raises(IndexError, match="boolean index of length 2"):
        lst[torch.tensor([True, False])]


def test_decode_rejects_wrong_mask_size():
    with pytest.raises(ValueError, match="expected \\(256, 256\\)"):
        decode_dp_masks([_rle(np.ones((32, 32), bool))])


@pytest.mark.skipif(not (SHARED / "data/densepose_demo/demo_dp_single_ann.pkl").is_file(), reason="shared demo data absent")
def test_real_demo_annotation_points_validate_and_flip():
    with open(SHARED / "data/densepose_demo/demo_dp_single_ann.pkl", "rb") as f:
        real = pickle.load(f, encoding="latin1")
    ann = {k: np.asarray(real[s]).reshape(-1).tolist() for k, s in
           (("dp_x", "x"), ("dp_y", "y"), ("dp_I", "I"), ("dp_U", "U"), ("dp_V", "V"))}  # fmt: skip
    with pytest.raises(ValueError, match="dp_x must lie in the 256x256 box frame"):
        validate_densepose_annotation(ann, "demo")  # the pickle's points are in crop pixels
    h, w = np.asarray(real["ICrop"]).shape[:2]
    ann["dp_x"] = [x * 256.0 / w for x in ann["dp_x"]]
    ann["dp_y"] = [y * 256.0 / h for y in ann["dp_y"]]
    validate_densepose_annotation(ann, "demo")
    dp = DensePoseDataRelative.from_annotation(ann)
    assert len(dp) > 10 and dp.segm is None
    u, v = DensePoseTransformData.identity_tables()
    td = DensePoseTransformData({"U_transforms": torch.from_numpy(u), "V_transforms": torch.from_numpy(v)})
    f = dp.hflip(td)
    expected = torch.as_tensor(DensePoseTransformData.POINT_LABEL_SYMMETRIES)[dp.i]
    assert torch.equal(f.i, expected)
    assert torch.allclose(f.u, dp.u, atol=1 / 255 + 1e-6) and torch.allclose(f.x, 256 - dp.x)
