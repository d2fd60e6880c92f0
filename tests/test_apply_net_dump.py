"""tools/apply_net.py dump, against fake predictors with the DefaultPredictor interface."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.postprocess.charts import densepose_chart_results
from densepose_fnl.postprocess.iuv import parse_iuv_image, read_iuv_images
from densepose_fnl.structures import DensePoseChartPredictorOutput, Instances

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "densepose_demo"
needs_demo = pytest.mark.skipif(not (DEMO / "demo_im_IUV.png").is_file(), reason="DensePose demo data not present")


def _load_tool():
    spec = importlib.util.spec_from_file_location("apply_net_under_test", ROOT / "tools" / "apply_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apply_net = _load_tool()


class DemoPredictor:
    """Returns the persons of demo_im_IUV/INDS.png (scores = rank / 20) as per-person chart results."""

    def __init__(self, cfg):
        self.cfg = cfg
        iuv, inds = read_iuv_images(str(DEMO / "demo_im_IUV.png"), str(DEMO / "demo_im_INDS.png"))
        self.boxes, ranks, self.results = parse_iuv_image(iuv, inds)
        self.scores = ranks / 20.0

    def __call__(self, image):
        n = len(self.results)
        return {"instances": Instances(image.shape[:2], pred_boxes=self.boxes.clone(), scores=self.scores.clone(),
                                       pred_classes=torch.zeros(n, dtype=torch.long), pred_densepose=list(self.results))}


class RawPredictor:
    """Two persons per image with raw 8 x 8 chart maps (DensePoseChartPredictorOutput), as the model gives."""

    calls = 0

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, image):
        RawPredictor.calls += 1
        h, w = image.shape[:2]
        boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.9 * h], [0.55 * w, 0.2 * h, 0.95 * w, 0.95 * h]])
        s = 8
        yy, xx = torch.meshgrid(torch.arange(s).float(), torch.arange(s).float(), indexing="ij")
        coarse = torch.stack([torch.zeros(s, s), ((yy - 3.5) ** 2 / 16 + (xx - 3.5) ** 2 / 9 < 1).float() * 2 - 1])
        fine = torch.full((25, s, s), -100.0)
        for p in range(1, 25):
            fine[p] = -((yy * 3 + xx / 3) - p).abs()
        u = (xx / (s - 1)).expand(25, s, s)
        v = (yy / (s - 1)).expand(25, s, s)
        out = DensePoseChartPredictorOutput(
            coarse_segm=coarse[None].repeat(2, 1, 1, 1), fine_segm=fine[None].repeat(2, 1, 1, 1),
            u=u[None].repeat(2, 1, 1, 1).clone(), v=v[None].repeat(2, 1, 1, 1).clone(),
        )
        return {"instances": Instances((h, w), pred_boxes=boxes, scores=torch.tensor([0.9, 0.85]),
                                       pred_classes=torch.zeros(2, dtype=torch.long), pred_densepose=out)}


@pytest.fixture
def cfg_and_model(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("MODEL:\n  DEVICE: cpu\n")
    model = tmp_path / "model.pth"
    model.write_bytes(b"fake")
    return str(cfg), str(model)


@needs_demo
def test_dump_demo_reloads_and_iuv_pngs_reproduce_the_originals(tmp_path, cfg_and_model):
    cfg, model = cfg_and_model
    out, iuv_dir = tmp_path / "out" / "res.pkl", tmp_path / "iuv"
    rc = apply_net.main(["dump", cfg, model, str(DEMO / "demo_im.jpg"), "--output", str(out),
                         "--iuv-dir", str(iuv_dir), "--iuv-index-offset", "7"], predictor_factory=DemoPredictor)
    assert rc == 0
    dump = torch.load(out, weights_only=True)  # plain containers and tensors only
    ref = DemoPredictor(None)
    assert len(dump) == 1
    entry = dump[0]
    assert entry["file_name"] == str(DEMO / "demo_im.jpg") and entry["image_size"] == (600, 1116)
    assert torch.equal(entry["scores"], ref.scores) and torch.equal(entry["pred_boxes_XYXY"], ref.boxes)
    assert len(entry["pred_densepose"]) == 13
    for dp, r in zip(entry["pred_densepose"], ref.results):
        assert dp["labels"].dtype == torch.uint8 and torch.equal(dp["labels"].long(), r.labels)
        assert dp["uv"].dtype == torch.float32 and torch.equal(dp["uv"], r.uv)
    # the persons were ranked 7..19 in the original picture: offset 7 gives back both files exactly
    for suffix in ("IUV", "INDS"):
        ours = cv2.imread(str(iuv_dir / f"demo_im_{suffix}.png"), cv2.IMREAD_UNCHANGED)
        orig = cv2.imread(str(DEMO / f"demo_im_{suffix}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(ours, orig)


def test_dump_folder_raw_outputs_overrides_and_min_score(tmp_path, cfg_and_model):
    cfg, model = cfg_and_model
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, (h, w) in enumerate([(60, 80), (90, 70)]):
        cv2.imwrite(str(folder / f"im{k}.png"), np.full((h, w, 3), 40 * k + 20, np.uint8))
    seen = {}

    def factory(c):
        seen["cfg"] = c
        return RawPredictor(c)

    out = tmp_path / "dump.pkl"
    rc = apply_net.main(["dump", cfg, model, str(folder), "--output", str(out), "--nms_thresh", "0.3",
                         "--device", "cpu", "--min_score", "0.88", "--opts", "INPUT.MIN_SIZE_TEST", "320"],
                        predictor_factory=factory)
    assert rc == 0
    c = seen["cfg"]
    assert c.MODEL.WEIGHTS == model and c.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.3
    assert c.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.88 and c.INPUT.MIN_SIZE_TEST == 320 and c.MODEL.DEVICE == "cpu"
    dump = torch.load(out, weights_only=True)
    assert [Path(e["file_name"]).name for e in dump] == ["im0.png", "im1.png"]
    for entry, (h, w) in zip(dump, [(60, 80), (90, 70)]):
        assert entry["image_size"] == (h, w)
        assert entry["scores"].tolist() == pytest.approx([0.9])  # 0.85 < --min_score
        raw = RawPredictor(None)(np.zeros((h, w, 3), np.uint8))["instances"]
        expected = densepose_chart_results(raw.pred_boxes[:1], raw.pred_densepose[0])[0]
        dp = entry["pred_densepose"][0]
        assert torch.equal(dp["labels"].long(), expected.labels) and torch.allclose(dp["uv"], expected.uv)
        assert dp["labels"].max() > 0 and float(dp["uv"].max()) <= 1.0

    # plain trailing KEY VALUE pairs work as --opts does
    rc = apply_net.main(["dump", cfg, model, str(folder / "im0.png"), "--output", str(out),
                         "MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.25"], predictor_factory=factory)
    assert rc == 0 and seen["cfg"].MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.25
    assert seen["cfg"].MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05  # dump keeps the config's threshold


def test_dump_reports_bad_config_and_model(tmp_path, cfg_and_model, capsys):
    cfg, model = cfg_and_model
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((10, 10, 3), np.uint8))
    assert apply_net.main(["dump", str(tmp_path / "nope.yaml"), model, str(img)], predictor_factory=RawPredictor) == 1
    assert "nope.yaml" in capsys.readouterr().err
    assert apply_net.main(["dump", cfg, str(tmp_path / "nope.pth"), str(img)], predictor_factory=RawPredictor) == 1
    assert "nope.pth" in capsys.readouterr().err
    assert apply_net.main(["dump", cfg, model, str(img), "NO.SUCH_KEY", "1"], predictor_factory=RawPredictor) == 1
    assert "NO.SUCH_KEY" in capsys.readouterr().err
