"""The demo's synthetic set: points-per-person knob, demo layout, re-rendering a split image, CLI preset."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from densepose_fnl.data import synthetic as S
from densepose_fnl.data.synthetic import DEMO_PRESET, ensure_synthetic_dataset, generate_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def _load(root, split="train"):
    return json.loads(Path(S.synthetic_split_paths(root, split)[1]).read_text())


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    # the demo layout and image sizes, few images: seconds
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("demo") / "ds", num_train=3, num_val=2, seed=1,
                                    min_size=320, max_size=336, points_per_person=600, layout="demo")


def test_points_per_person_knob(demo_root):
    data = _load(demo_root)
    n = [len(a["dp_x"]) for a in data["annotations"] if "dp_x" in a]
    assert n and all(k == 600 for k in n)  # people of >= 320 px images have far more than 600 free cells
    for a in data["annotations"]:
        if "dp_x" in a:  # one point per cell of the 256 x 256 box frame: no duplicates
            cells = set(zip(a["dp_x"], a["dp_y"]))
            assert len(cells) == len(a["dp_x"])
            assert set(a) >= {"dp_I", "dp_U", "dp_V", "dp_masks"} and len(a["dp_masks"]) == 14
    manifest = json.loads((demo_root / "manifest.json").read_text())
    assert manifest["points_per_person"] == 600 and manifest["layout"] == "demo"


def test_demo_layout_sizes_people_and_loader(demo_root):
    from densepose_fnl.data.datasets.coco import load_densepose_coco_json

    for split, n in (("train", 3), ("val", 2)):
        data = _load(demo_root, split)
        assert len(data["images"]) == n
        for img in data["images"]:
            assert 320 <= min(img["height"], img["width"]) <= 336
            anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
            assert 1 <= len(anns) <= 3
            # people of a reasonable size: the tallest is at least a third of the image height
            assert max(a["bbox"][3] for a in anns) >= img["height"] / 3
        img_dir, ann_file = S.synthetic_split_paths(demo_root, split)
        dicts = load_densepose_coco_json(ann_file, img_dir, f"densepose_synthetic_{split}")
        assert len(dicts) == n
        assert all(len(a["dp_x"]) == 600 for d in dicts for a in d["annotations"] if "dp_x" in a)


def test_classic_defaults_unchanged(tmp_path):
    """The default arguments still give the original layout: 100 points per person, 1-4 people."""
    root = generate_synthetic_dataset(tmp_path / "c", num_train=4, num_val=0, seed=5, min_size=96, max_size=112)
    data = _load(root)
    assert all(len(a["dp_x"]) == 100 for a in data["annotations"] if "dp_x" in a)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["points_per_person"] == 100 and manifest["layout"] == "classic"
    # same draws as the classic renderer called with its historical defaults
    rng = np.random.default_rng([5, 0, 0])
    img, anns, _ = S.render_synthetic_image(rng, 96, 112)
    ann0 = [a for a in data["annotations"] if a["image_id"] == 1]
    assert [a["bbox"] for a in anns] == [a["bbox"] for a in ann0]
    assert [a.get("dp_U") for a in anns] == [a.get("dp_U") for a in ann0]


def _background_edges(layout: str, k: int) -> float:
    import cv2

    img, _, dense = S.render_synthetic_image(np.random.default_rng([0, 1, k]), 320, 320, 100, layout)
    g = cv2.GaussianBlur(img.astype(np.float32).mean(2), (0, 0), 2.0)  # edges of shapes, not pixel noise
    gy, gx = np.abs(np.diff(g, axis=0))[:, :-1], np.abs(np.diff(g, axis=1))[:-1, :]
    return float(((np.hypot(gx, gy) > 6) & (dense["owner"][:-1, :-1] < 0)).mean())


def test_demo_background_is_not_trivial():
    """Cluttered backgrounds: clearly more edges than the classic colour field with a few shapes."""
    demo = np.mean([_background_edges("demo", k) for k in range(6)])
    classic = np.mean([_background_edges("classic", k) for k in range(6)])
    assert demo > 1.8 * classic and demo > 0.05


def test_render_split_image_matches_written_set(demo_root):
    data = _load(demo_root, "val")
    img, anns, dense = S.render_split_image(demo_root, "val", 2)
    written = [a for a in data["annotations"] if a["image_id"] == 2]
    assert [a["bbox"] for a in anns] == [a["bbox"] for a in written]
    im = data["images"][1]
    assert dense["I"].shape == (im["height"], im["width"]) == img.shape[:2]
    with pytest.raises(ValueError, match="outside"):
        S.render_split_image(demo_root, "val", 3)


def test_bad_knobs():
    with pytest.raises(ValueError, match="layout"):
        S.get_layout("nope")
    with pytest.raises(ValueError, match="points_per_person"):
        S.generate_split("/nonexistent", "train", 1, points_per_person=0)


def test_demo_preset_and_cli(tmp_path):
    assert DEMO_PRESET["min_size"] >= 320 and DEMO_PRESET["layout"] == "demo"
    assert DEMO_PRESET["points_per_person"] > 100
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_synthetic_dataset.py"), "--output", str(out),
         "--num-train", "1", "--num-val", "1", "--seed", "2", "--min-size", "64", "--max-size", "72",
         "--points-per-person", "250", "--layout", "demo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["points_per_person"] == 250
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_synthetic_dataset.py"), "--output", str(out),
         "--points-per-person", "0"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--points-per-person" in bad.stderr


def test_workers_write_the_same_set(tmp_path):
    kw = dict(num_train=3, num_val=1, seed=4, min_size=64, max_size=72, points_per_person=150, layout="demo")
    a = generate_synthetic_dataset(tmp_path / "a", **kw)
    b = generate_synthetic_dataset(tmp_path / "b", workers=2, **kw)
    assert _load(a) == _load(b) and _load(a, "val") == _load(b, "val")
    assert (a / "train" / "train_000003.jpg").read_bytes() == (b / "train" / "train_000003.jpg").read_bytes()
