"""tools/apply_net.py show: every visualizer, many inputs, bad inputs, videos, the real command line."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.postprocess.iuv import parse_iuv_image, read_iuv_images
from densepose_fnl.structures import DensePoseChartPredictorOutput, Instances
from densepose_fnl.vis import build_visualizer, load_texture_atlas

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "densepose_demo"
CHECK_DIR = Path("/tmp/dp_vis_check")
needs_demo = pytest.mark.skipif(not (DEMO / "demo_im_IUV.png").is_file(), reason="DensePose demo data not present")


def _load_tool():
    spec = importlib.util.spec_from_file_location("apply_net_show_under_test", ROOT / "tools" / "apply_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apply_net = _load_tool()


class DemoPredictor:
    """The persons of demo_im_IUV/INDS.png (scores = rank / 20, 0.35 .. 0.95) for any picture."""

    def __init__(self, cfg):
        iuv, inds = read_iuv_images(str(DEMO / "demo_im_IUV.png"), str(DEMO / "demo_im_INDS.png"))
        self.boxes, ranks, self.results = parse_iuv_image(iuv, inds)
        self.scores = ranks / 20.0

    def __call__(self, image):
        n = len(self.results)
        return {"instances": Instances(image.shape[:2], pred_boxes=self.boxes.clone(), scores=self.scores.clone(),
                                       pred_classes=torch.zeros(n, dtype=torch.long), pred_densepose=list(self.results))}


class BoxPredictor:
    """One person filling the middle of any picture, raw 4 x 4 chart maps."""

    def __init__(self, cfg):
        pass

    def __call__(self, image):
        h, w = image.shape[:2]
        box = torch.tensor([[0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h]])
        ones = torch.ones(1, 25, 4, 4)
        fine = torch.zeros(1, 25, 4, 4)
        fine[:, 5] = 5.0
        coarse = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]
        out = DensePoseChartPredictorOutput(coarse_segm=coarse, fine_segm=fine, u=ones * 0.5, v=ones * 0.25)
        return {"instances": Instances((h, w), pred_boxes=box, scores=torch.tensor([0.99]),
                                       pred_classes=torch.zeros(1, dtype=torch.long), pred_densepose=out)}


@pytest.fixture
def cfg_and_model(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("MODEL:\n  DEVICE: cpu\n")
    model = tmp_path / "model.pth"
    model.write_bytes(b"fake")
    return str(cfg), str(model)


def _write_video(path, n_frames, size=(96, 64), fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for k in range(n_frames):
        frame = np.full((size[1], size[0], 3), 30 + 20 * k, np.uint8)
        cv2.circle(frame, (10 + 8 * k, 32), 6, (0, 0, 255), -1)
        writer.write(frame)
    writer.release()


def _count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    size = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        size = frame.shape
        n += 1
    cap.release()
    return n, size


@needs_demo
@pytest.mark.parametrize("vis", ["bbox", "dp_segm", "dp_u", "dp_v", "dp_contour", "dp_iuv_texture", "bbox,dp_contour"])
def test_show_each_visualizer_on_the_demo(vis, tmp_path, cfg_and_model):
    cfg, model = cfg_and_model
    out = tmp_path / f"{vis.replace(',', '+')}.png"
    atlas_path = str(DEMO / "texture_from_SURREAL.png")
    args = ["show", cfg, model, str(DEMO / "demo_im.jpg"), vis, "--output", str(out), "--min_score", "0.5"]
    if vis == "dp_iuv_texture":
        args += ["--texture_atlas", atlas_path]
    assert apply_net.main(args, predictor_factory=DemoPredictor) == 0
    picture = cv2.imread(str(out))
    image = cv2.imread(str(DEMO / "demo_im.jpg"))
    assert picture.shape == image.shape and picture.dtype == np.uint8
    CHECK_DIR.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(CHECK_DIR / f"apply_net_show_{out.name}"), picture)
    # same picture as the visualizer itself on the grey image with the persons scoring >= 0.5
    pred = DemoPredictor(None)
    keep = pred.scores >= 0.5
    gray = np.repeat(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)
    atlas = load_texture_atlas(atlas_path) if vis == "dp_iuv_texture" else None
    results = [r for r, k in zip(pred.results, keep.tolist()) if k]
    expected = build_visualizer(vis, atlas).visualize(gray, pred.boxes[keep], results, pred.scores[keep])
    assert np.array_equal(picture, expected)
    changed = np.any(picture != gray, axis=2)
    assert changed.any()
    if "bbox" not in vis:  # DensePose overlays stay inside the kept persons' foreground
        fg = np.zeros(changed.shape, bool)
        for b, r in zip(pred.boxes[keep].int().tolist(), results):
            fg[b[1] : b[3], b[0] : b[2]] |= r.labels.numpy() > 0
        assert not np.any(changed & ~fg)


def test_show_many_inputs_bad_inputs_are_reported_and_the_rest_processed(tmp_path, cfg_and_model, capsys):
    cfg, model = cfg_and_model
    folder = tmp_path / "batch"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_good.png"), np.full((50, 80, 3), 100, np.uint8))
    (folder / "b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "c_notes.txt").write_text("hello")
    os.symlink(folder / "nowhere.png", folder / "d_missing.png")  # broken link: a missing file
    (folder / "e_broken.mp4").write_bytes(b"\x00" * 2048)
    cv2.imwrite(str(folder / "f_good.jpg"), np.full((40, 30, 3), 200, np.uint8))
    out = tmp_path / "out" / "vis.png"
    rc = apply_net.main(["show", cfg, model, str(folder), "dp_segm,bbox", "--output", str(out)], predictor_factory=BoxPredictor)
    assert rc == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "apply_net: error:" in ln]
    for name, reason in [("b_corrupt.jpg", "cannot read image"), ("c_notes.txt", "unsupported file type"),
                         ("d_missing.png", "no such file"), ("e_broken.mp4", "video")]:
        assert any(name in ln and reason in ln for ln in lines), (name, lines)
    assert len(lines) == 4
    # outputs are numbered by input position; the good ones are there with their input's size
    assert sorted(p.name for p in out.parent.iterdir()) == ["vis.0001.png", "vis.0006.png"]
    assert cv2.imread(str(out.parent / "vis.0001.png")).shape == (50, 80, 3)
    assert cv2.imread(str(out.parent / "vis.0006.png")).shape == (40, 30, 3)

    # the same folder without the bad files: exit code 0
    for name in ["b_corrupt.jpg", "c_notes.txt", "d_missing.png", "e_broken.mp4"]:
        os.unlink(folder / name)
    assert apply_net.main(["show", cfg, model, str(folder / "*_good.*"), "bbox", "--output", str(out)],
                          predictor_factory=BoxPredictor) == 0
    assert apply_net.main(["show", cfg, model, str(tmp_path / "absent.jpg"), "bbox"], predictor_factory=BoxPredictor) == 1
    assert "absent.jpg" in capsys.readouterr().err
    assert apply_net.main(["show", cfg, model, str(folder), "dp_nope"], predictor_factory=BoxPredictor) == 1
    assert "dp_nope" in capsys.readouterr().err
    assert apply_net.main(["show", cfg, model, str(folder), "dp_iuv_texture"], predictor_factory=BoxPredictor) == 1
    assert "--texture_atlas" in capsys.readouterr().err


def test_show_video_writes_an_mp4_with_every_frame(tmp_path, cfg_and_model):
    cfg, model = cfg_and_model
    video = tmp_path / "clip.avi"
    _write_video(video, 7)
    out = tmp_path / "clip_vis.png"  # an image name: the video goes to clip_vis.mp4
    assert apply_net.main(["show", cfg, model, str(video), "bbox,dp_u", "--output", str(out),
                           "--background", "color"], predictor_factory=BoxPredictor) == 0
    n, shape = _count_frames(tmp_path / "clip_vis.mp4")
    assert n == 7 and shape == (64, 96, 3)
    cap = cv2.VideoCapture(str(tmp_path / "clip_vis.mp4"))
    ok, first = cap.read()
    cap.release()
    assert ok and abs(int(first[32, 48, 0]) - 30) > 20  # the person overlay in the middle of frame 0
    # dump over a video: one entry per frame
    dump = tmp_path / "clip.pkl"
    assert apply_net.main(["dump", cfg, model, str(video), "--output", str(dump)], predictor_factory=BoxPredictor) == 0
    entries = torch.load(dump, weights_only=True)
    assert [e["frame_index"] for e in entries] == list(range(7))
    assert all(e["image_size"] == (64, 96) and len(e["pred_densepose"]) == 1 for e in entries)


def test_command_line_exit_code_and_one_line_message(tmp_path, cfg_and_model):
    cfg, model = cfg_and_model
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "apply_net.py"), "show", cfg, model, str(tmp_path / "missing.jpg"), "bbox"],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"apply_net: error: {tmp_path / 'missing.jpg'}: no such file or directory"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "apply_net.py"), "show", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "dp_iuv_texture" in proc.stdout and "--texture_atlas" in proc.stdout
