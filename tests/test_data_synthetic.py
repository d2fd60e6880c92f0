"""The embedded synthetic DensePose-COCO generator: format, consistency, determinism, flip symmetry."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from densepose_fnl.data import synthetic as S
from densepose_fnl.data.synthetic import ensure_synthetic_dataset, generate_synthetic_dataset
from densepose_fnl.structures.densepose_annotations import FINE_TO_COARSE, DensePoseTransformData

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=8, num_val=3, seed=5, min_size=96, max_size=128)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", **SMALL)


def _load(root, split="train"):
    return json.loads(Path(S.synthetic_split_paths(root, split)[1]).read_text())


def test_layout_and_coco_json_loads(synth_root):
    for split, n in (("train", 8), ("val", 3)):
        img_dir, ann_file = S.synthetic_split_paths(synth_root, split)
        coco = COCO(ann_file)
        assert len(coco.imgs) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["person"]
        assert len(coco.anns) >= n  # at least one person per image
        for img in coco.imgs.values():
            assert os.path.isfile(os.path.join(img_dir, img["file_name"]))
            assert 96 <= min(img["height"], img["width"]) <= 128
        assert all(1 <= len(coco.imgToAnns[i]) <= 4 for i in coco.imgs)
    assert (synth_root / "UV_symmetry_transforms.mat").is_file()


def test_densepose_fields_are_valid_and_consistent(synth_root):
    data = _load(synth_root)
    n_dp = 0
    for ann in data["annotations"]:
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0
        if "dp_x" not in ann:
            continue
        n_dp += 1
        n = len(ann["dp_x"])
        assert n == 100
        assert all(len(ann[k]) == n for k in ("dp_y", "dp_I", "dp_U", "dp_V"))
        x, y = np.array(ann["dp_x"]), np.array(ann["dp_y"])
        i, u, v = np.array(ann["dp_I"]), np.array(ann["dp_U"]), np.array(ann["dp_V"])
        assert x.min() >= 0 and x.max() < 256 and y.min() >= 0 and y.max() < 256
        assert u.min() >= 0 and u.max() <= 1 and v.min() >= 0 and v.max() <= 1
        assert set(i.tolist()) <= set(range(1, 25)) and np.all(i == np.round(i))
        assert len(ann["dp_masks"]) == 14
        segm = np.zeros((256, 256), np.int64)
        for k, m in enumerate(ann["dp_masks"]):
            if m == []:
                continue
            assert isinstance(m["counts"], str) and m["size"] == [256, 256]
            dec = mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()})
            assert dec.shape == (256, 256) and dec.any()
            segm[dec > 0] = k + 1
        # every point lies on the coarse part of its fine part
        coarse_at_pts = segm[y.astype(int), x.astype(int)]
        np.testing.assert_array_equal(coarse_at_pts, np.asarray(FINE_TO_COARSE)[i.astype(int)])
        # points sample several parts, not only the torso
        assert len(set(i.tolist())) >= 5
    assert n_dp >= len(data["images"])


def test_bbox_is_tight_around_visible_person(synth_root):
    data = _load(synth_root)
    for ann in data["annotations"]:
        vis = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        rows, cols = np.nonzero(vis.any(1))[0], np.nonzero(vis.any(0))[0]
        x0, y0, w, h = ann["bbox"]
        assert (x0, y0, x0 + w, y0 + h) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        assert ann["area"] == float(vis.sum())
        # the box frame's masks cover the person: most mask pixels are foreground in the image
        if "dp_masks" in ann:
            fg = sum(mask_utils.area({"size": m["size"], "counts": m["counts"].encode()}) for m in ann["dp_masks"] if m)
            assert fg > 0.05 * 256 * 256


def test_images_show_the_people(synth_root):
    """Person pixels differ from the background model: the image is not blank noise."""
    import cv2

    img_dir, _ = S.synthetic_split_paths(synth_root, "train")
    img = cv2.imread(os.path.join(img_dir, "train_000001.jpg"))
    assert img is not None and img.dtype == np.uint8 and img.std() > 10


def test_deterministic_and_prefix_stable(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", num_train=3, num_val=1, seed=11, min_size=64, max_size=80)
    b = generate_synthetic_dataset(tmp_path / "b", num_train=3, num_val=1, seed=11, min_size=64, max_size=80)
    c = generate_synthetic_dataset(tmp_path / "c", num_train=2, num_val=1, seed=11, min_size=64, max_size=80)
    d = generate_synthetic_dataset(tmp_path / "d", num_train=3, num_val=1, seed=12, min_size=64, max_size=80)
    ja, jb, jc, jd = (_load(r) for r in (a, b, c, d))
    assert ja == jb
    assert (a / "train" / "train_000002.jpg").read_bytes() == (b / "train" / "train_000002.jpg").read_bytes()
    # image k depends only on (seed, split, k): a shorter set is a prefix of a longer one
    assert jc["images"] == ja["images"][:2]
    assert ja != jd


def test_ensure_reuses_and_regenerates(tmp_path):
    root = tmp_path / "ds"
    ensure_synthetic_dataset(root, num_train=2, num_val=1, seed=0, min_size=64, max_size=72)
    ann = Path(S.synthetic_split_paths(root, "train")[1])
    stamp = ann.stat().st_mtime_ns
    ensure_synthetic_dataset(root, num_train=2, num_val=1, seed=0, min_size=64, max_size=72)
    assert ann.stat().st_mtime_ns == stamp  # reused, not rewritten
    ensure_synthetic_dataset(root, num_train=3, num_val=1, seed=0, min_size=64, max_size=72)
    assert len(_load(root)["images"]) == 3
    assert json.loads((root / "manifest.json").read_text())["num_train"] == 3


def test_flip_symmetry_tables_match_the_generator():
    """Mirroring a synthetic person gives the person built from the mirrored skeleton, with labels swapped
    by the official symmetries and (U, V) mapped by the tables the generator writes."""
    u_tab, v_tab = S.synthetic_uv_symmetry_tables()
    sym = np.asarray(DensePoseTransformData.POINT_LABEL_SYMMETRIES)
    W, H = 160, 180
    ys, xs = np.mgrid[0:H, 0:W]
    xs, ys = xs.ravel() + 0.5, ys.ravel() + 0.5
    seen = set()
    for seed, facing in ((0, 1), (1, -1), (2, 1)):
        rng = np.random.default_rng(seed)
        j = S._skeleton(rng)
        c, tilt, colors = np.array([70.0, 90.0]), 0.1 * seed - 0.1, np.zeros((25, 3))
        person = S._build_person(j, 120.0, c, facing, tilt, 1.0, colors)
        mirrored = S._build_person(S._mirror_skeleton(j), 120.0, np.array([W - c[0], c[1]]), facing, -tilt, 1.0, colors)
        lab, u, v, own = S._render([person], xs, ys)
        lab2, u2, v2, own2 = S._render([mirrored], W - xs, ys)
        fg = own >= 0
        np.testing.assert_array_equal(own2 >= 0, fg)
        same = sym[lab[fg]] == lab2[fg]
        assert same.mean() > 0.97
        p, ui, vi = lab[fg] - 1, (u[fg] * 255).astype(int), (v[fg] * 255).astype(int)
        assert np.abs(u_tab[p, vi, ui] - u2[fg])[same].max() <= 1 / 255 + 1e-6
        assert np.abs(v_tab[p, vi, ui] - v2[fg])[same].max() <= 1 / 255 + 1e-6
        seen |= set(lab[fg].tolist())
    assert {1, 2, 23, 24, 15, 17}.issubset(seen)  # front and back parts and both head halves covered


def test_written_symmetry_file_loads(synth_root):
    td = DensePoseTransformData.load(synth_root / "UV_symmetry_transforms.mat")
    u_tab, v_tab = S.synthetic_uv_symmetry_tables()
    np.testing.assert_allclose(td.uv_symmetries["U_transforms"].numpy(), u_tab, atol=1e-6)
    np.testing.assert_allclose(td.uv_symmetries["V_transforms"].numpy(), v_tab, atol=1e-6)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_synthetic_dataset.py"), "--output", str(out),
         "--num-train", "2", "--num-val", "1", "--seed", "3", "--min-size", "64", "--max-size", "72", "--png"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "DENSEPOSE_SYNTHETIC_ROOT" in r.stdout
    assert sorted(p.name for p in (out / "train").iterdir()) == ["train_000001.png", "train_000002.png"]
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_synthetic_dataset.py"), "--output", str(out), "--min-size", "300"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--min-size" in bad.stderr


def test_generation_speed(tmp_path):
    import time

    t = time.time()
    generate_synthetic_dataset(tmp_path / "speed", num_train=20, num_val=0, seed=0)
    assert time.time() - t < 8.0  # ~200 default-size images well under a minute (slack for loaded CI)


def test_dense_maps_agree_with_box_frame_points(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "dense", num_train=3, num_val=0, seed=4, min_size=96, max_size=112,
                                      save_dense=True)  # fmt: skip
    data = _load(root)
    agree = total = 0
    for img in data["images"]:
        dense = np.load(root / "train" / img["file_name"].replace(".jpg", "_dense.npz"))
        assert dense["I"].shape == (img["height"], img["width"]) and dense["I"].max() <= 24
        for ann in (a for a in data["annotations"] if a["image_id"] == img["id"] and "dp_x" in a):
            x0, y0, w, h = ann["bbox"]
            px = np.clip((x0 + np.array(ann["dp_x"]) * w / 256).astype(int), 0, img["width"] - 1)
            py = np.clip((y0 + np.array(ann["dp_y"]) * h / 256).astype(int), 0, img["height"] - 1)
            agree += int((dense["I"][py, px] == np.array(ann["dp_I"])).sum())
            total += len(px)
    assert total >= 100 and agree / total > 0.9  # equal up to sub-pixel differences at part borders
