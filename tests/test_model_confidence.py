"""Chart confidences (WC1 / WC2 / WC1M / WC2M, issue 14): the predictor's outputs, the per-person results
with confidences, strict loading of B-WC2M checkpoints and B-WC2M end to end (eager inference, training)."""
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from densepose_fnl.config import get_cfg, load_config
from densepose_fnl.modeling import build_model
from densepose_fnl.modeling.densepose.predictor import DensePoseChartWithConfidencePredictor, build_densepose_predictor
from densepose_fnl.postprocess import densepose_chart_results
from densepose_fnl.structures import (
    DensePoseChartPredictorOutput,
    DensePoseChartPredictorOutputWithConfidences,
    DensePoseChartResult,
    DensePoseChartResultWithConfidences,
)
from densepose_fnl.structures.densepose_outputs import uv_sigma

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parents[1]
CHART = ("coarse_segm", "fine_segm", "u", "v")


def _cfg(uv=None, segm=False, **kw):
    cfg = get_cfg()
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    h.UV_CONFIDENCE.ENABLED = uv is not None
    if uv:
        h.UV_CONFIDENCE.TYPE = uv
    h.SEGM_CONFIDENCE.ENABLED = segm
    for k, v in kw.items():
        setattr(h.SEGM_CONFIDENCE, k, v)
    return cfg


@pytest.mark.parametrize("uv,segm,extra", [
    (None, False, ()),
    ("iid_iso", False, ("sigma_2",)),
    ("indep_aniso", False, ("sigma_2", "kappa_u", "kappa_v")),
    ("iid_iso", True, ("sigma_2", "fine_segm_confidence", "coarse_segm_confidence")),
    ("indep_aniso", True, ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")),
    (None, True, ("fine_segm_confidence", "coarse_segm_confidence")),
])
def test_predictor_outputs_and_layers(uv, segm, extra):
    p = build_densepose_predictor(_cfg(uv, segm), 16)
    assert p.output_names == CHART + extra
    layers = {n.rsplit(".", 1)[0] for n, _ in p.named_parameters()}
    assert layers == {"ann_index_lowres", "index_uv_lowres", "u_lowres", "v_lowres"} | {f"{n}_lowres" for n in extra}
    out = p(torch.randn(3, 16, 7, 7))
    assert isinstance(out, DensePoseChartPredictorOutputWithConfidences if extra else DensePoseChartPredictorOutput)
    for name in extra:
        channels = 1 if name.endswith("_confidence") else 25
        assert getattr(out, name).shape == (3, channels, 28, 28)
    if extra:
        assert out.sigma_1 is None
    assert len(p.forward_tensors(torch.randn(2, 16, 7, 7))) == len(p.output_names)


def test_segmentation_confidence_is_softplus_plus_epsilon_and_rescales_the_logits():
    p = build_densepose_predictor(_cfg("iid_iso", True, EPSILON=0.25), 8)
    x = torch.randn(2, 8, 5, 5)
    out = p(x)

    def up(t):
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    fine_conf = F.softplus(up(p.fine_segm_confidence_lowres(x))) + 0.25
    coarse_conf = F.softplus(up(p.coarse_segm_confidence_lowres(x))) + 0.25
    torch.testing.assert_close(out.fine_segm_confidence, fine_conf)
    torch.testing.assert_close(out.coarse_segm_confidence, coarse_conf)
    assert float(out.fine_segm_confidence.detach().min()) > 0.25
    torch.testing.assert_close(out.fine_segm, up(p.index_uv_lowres(x)) * fine_conf.repeat_interleave(25, dim=1))
    torch.testing.assert_close(out.coarse_segm, up(p.ann_index_lowres(x)) * coarse_conf.repeat_interleave(2, dim=1))
    # U, V and the UV confidence are not rescaled (sigma_2 is raw; the loss applies softplus + epsilon)
    torch.testing.assert_close(out.u, up(p.u_lowres(x)))
    torch.testing.assert_close(out.sigma_2, up(p.sigma_2_lowres(x)))


def test_bad_confidence_settings_are_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"UV_CONFIDENCE\.TYPE"):
        build_densepose_predictor(_cfg("iid_aniso"), 8)
    cfg = _cfg("iid_iso")
    cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME = "DensePoseChartPredictor"
    with pytest.raises(ValueError, match="DensePoseChartWithConfidencePredictor"):
        build_densepose_predictor(cfg, 8)


def test_output_indexing_moving_and_concatenation_keep_confidences():
    p = DensePoseChartWithConfidencePredictor(8, uv_confidence="indep_aniso", segm_confidence=True)
    out = p(torch.randn(3, 8, 4, 4))
    one = out[1]
    assert type(one) is DensePoseChartPredictorOutputWithConfidences and len(one) == 1
    assert one.kappa_v.shape == (1, 25, 16, 16) and one.sigma_1 is None
    both = DensePoseChartPredictorOutput.cat([out[0:1], out[2:3]])
    torch.testing.assert_close(both.coarse_segm_confidence, out.coarse_segm_confidence[[0, 2]])
    assert out.to("cpu").sigma_2 is not None
    assert list(out.tensors()) == list(p.output_names)


def test_results_carry_confidences_as_detectron2():
    p = DensePoseChartWithConfidencePredictor(8, uv_confidence="indep_aniso", segm_confidence=True)
    out = p(torch.randn(2, 8, 4, 4))
    boxes = torch.tensor([[10.0, 20.0, 40.5, 61.9], [0.0, 0.0, 12.0, 9.0]])
    results = densepose_chart_results(boxes, out)
    r = results[0]
    assert isinstance(r, DensePoseChartResultWithConfidences)
    assert r.labels.shape == (41, 30) and r.sigma_1 is None
    assert set(r.confidences()) == {"sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence"}

    def resized(t):
        return F.interpolate(t[None], (41, 30), mode="bilinear", align_corners=False)[0]

    # per-part confidences: the channel of the pixel's part, 0 on the background
    s = resized(out.sigma_2[0])
    fg = r.labels > 0
    assert fg.any() and (~fg).any()
    torch.testing.assert_close(r.sigma_2[fg], s.gather(0, r.labels[None])[0][fg])
    assert (r.sigma_2[~fg] == 0).all() and (r.kappa_u[~fg] == 0).all()
    # segmentation confidences: one channel over the whole box
    torch.testing.assert_close(r.fine_segm_confidence, resized(out.fine_segm_confidence[0])[0])
    # plain outputs give plain results
    plain = DensePoseChartPredictorOutput(out.coarse_segm, out.fine_segm, out.u, out.v)
    assert type(densepose_chart_results(boxes, plain)[0]) is DensePoseChartResult
    assert DensePoseChartResult(r.labels, r.uv).confidences() == {}


def test_uv_sigma_is_the_root_of_the_modelled_variance():
    raw = torch.tensor([-3.0, 0.0, 2.0])
    torch.testing.assert_close(uv_sigma(raw, 0.01) ** 2, F.softplus(raw) + 0.01)


@pytest.fixture(scope="module")
def wc2m_cfg(shared_dir):
    return load_config(str(shared_dir / "reference" / "authors_configs" / "mobile_parsing_rcnn_b_wc2m_s3x.yaml"),
                       ["MODEL.TIMMNETS.PRETRAINED", False])


def test_b_wc2m_strict_loading(tmp_path, wc2m_cfg):
    from densepose_fnl.checkpoint import CheckpointMismatchError, load_checkpoint

    model = build_model(wc2m_cfg)
    sd = model.state_dict()
    torch.save({"model": sd}, tmp_path / "full.pth")
    other = build_model(wc2m_cfg)
    load_checkpoint(other, str(tmp_path / "full.pth"))
    assert torch.equal(other.roi_heads.densepose_predictor.kappa_v_lowres.weight,
                       model.roi_heads.densepose_predictor.kappa_v_lowres.weight)
    # a plain B checkpoint lacks the confidence layers: strict loading names them
    torch.save({"model": {k: v for k, v in sd.items() if "confidence" not in k and "sigma" not in k
                          and "kappa" not in k}}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointMismatchError, match="kappa_u_lowres"):
        load_checkpoint(build_model(wc2m_cfg), str(tmp_path / "plain.pth"))


def test_b_wc2m_inference_and_loss_settings(wc2m_cfg):
    from densepose_fnl.utils.bn_calibration import calibrate_batchnorm

    torch.manual_seed(0)
    model = build_model(wc2m_cfg)
    image = (torch.rand(3, 160, 192) * 255).to(torch.uint8)
    calibrate_batchnorm(model, lambda: (model([{"image": image}]) for _ in range(1)))
    model.eval()
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
    dp = inst.pred_densepose
    assert isinstance(dp, DensePoseChartPredictorOutputWithConfidences) and len(dp) == len(inst) > 0
    assert dp.coarse_segm.shape[1:] == (2, 64, 64) and dp.kappa_u.shape[1:] == (25, 64, 64)
    results = densepose_chart_results(inst.pred_boxes, dp)
    assert all(isinstance(r, DensePoseChartResultWithConfidences) and r.kappa_v is not None for r in results)
    loss = model.roi_heads.densepose_losses
    assert (loss.uv_confidence, loss.w_segm, loss.w_part, loss.w_points) == ("indep_aniso", 5.0, 1.0, 0.0005)


def test_training_with_confidences_logs_the_uv_nll(tmp_path, monkeypatch):
    """The tiny synthetic model with WC2M's confidences trains (4 iterations): metrics.json has loss_densepose_UV
    instead of _U / _V, all finite; the evaluator scores it by the official protocol (box and DensePose AP)."""
    import json
    import os

    from _train_helpers import tiny_cfg, tiny_dataset

    from densepose_fnl.engine import DefaultTrainer, default_setup

    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", tiny_dataset(tmp_path / "synthetic"))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_cfg(tmp_path / "run", "SOLVER.MAX_ITER", 4, "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.ENABLED", True,
                       "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE", "indep_aniso",
                       "MODEL.ROI_DENSEPOSE_HEAD.SEGM_CONFIDENCE.ENABLED", True, "SOLVER.CLIP_GRADIENTS.ENABLED", True,
                       "DATASETS.TEST", "('densepose_synthetic_val',)", "TEST.EVAL_PERIOD", 4,
                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)
        default_setup(cfg)
        trainer = DefaultTrainer(cfg, log_period=1)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
    finally:
        torch.set_num_threads(n_threads)
        import logging

        for h in list(logging.getLogger().handlers):
            if getattr(h, "_densepose_fnl", False):
                logging.getLogger().removeHandler(h)
                h.close()
    with open(os.path.join(tmp_path / "run", "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if "total_loss" in r]
    assert train_rows and all("loss_densepose_UV" in r and "loss_densepose_U" not in r for r in train_rows)
    assert all(torch.isfinite(torch.tensor(r["loss_densepose_UV"])) for r in rows if "loss_densepose_UV" in r)
    res = results["densepose_synthetic_val"]
    assert {"bbox", "densepose_gps", "densepose_gpsm"} <= set(res) and "AP" in res["densepose_gps"]


def test_apply_net_dump_carries_the_confidences(tmp_path):
    import importlib.util

    import cv2
    import numpy as np

    from densepose_fnl.structures import Instances

    spec = importlib.util.spec_from_file_location("apply_net_conf", REPO / "tools" / "apply_net.py")
    apply_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apply_net)
    torch.manual_seed(0)
    p = DensePoseChartWithConfidencePredictor(8, uv_confidence="indep_aniso", segm_confidence=True)
    with torch.no_grad():
        raw = p(torch.randn(2, 8, 4, 4))
    boxes = torch.tensor([[5.0, 6.0, 40.0, 50.0], [20.0, 10.0, 70.0, 55.0]])

    class ConfPredictor:
        def __init__(self, cfg):
            pass

        def __call__(self, image):
            return {"instances": Instances(image.shape[:2], pred_boxes=boxes.clone(), scores=torch.tensor([0.9, 0.8]),
                                           pred_classes=torch.zeros(2, dtype=torch.long), pred_densepose=raw)}

    (tmp_path / "cfg.yaml").write_text("MODEL:\n  DEVICE: cpu\n")
    (tmp_path / "model.pth").write_bytes(b"fake")
    cv2.imwrite(str(tmp_path / "im.png"), np.zeros((64, 80, 3), np.uint8))
    rc = apply_net.main(["dump", str(tmp_path / "cfg.yaml"), str(tmp_path / "model.pth"), str(tmp_path / "im.png"),
                         "--output", str(tmp_path / "res.pkl")], predictor_factory=ConfPredictor)
    assert rc == 0
    dump = torch.load(tmp_path / "res.pkl", weights_only=True)
    expected = densepose_chart_results(boxes, raw)
    for dp, r in zip(dump[0]["pred_densepose"], expected):
        assert set(dp) == {"labels", "uv", "sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence",
                           "coarse_segm_confidence"}
        for name, t in r.confidences().items():
            assert dp[name].dtype == torch.float32 and torch.equal(dp[name], t)


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_repo_wc2m_configs_equal_the_authors(shared_dir):
    from densepose_fnl.analysis.model_stats import count_parameters

    ours = dict(_leaves(load_config(str(REPO / "configs" / "mobile_parsing_rcnn_b_wc2m_s3x.yaml"))))
    theirs = dict(_leaves(load_config(str(shared_dir / "reference" / "authors_configs" /
                                          "mobile_parsing_rcnn_b_wc2m_s3x.yaml"))))
    differ = {k for k in set(ours) | set(theirs) if k.split(".")[0] in ("MODEL", "INPUT", "SOLVER")
              and ours.get(k) != theirs.get(k)}
    assert differ == {"MODEL.ROI_HEADS.NAME"}  # their MyDensePoseROIHeads is registered as our DensePoseROIHeads
    for name in ("mobile_parsing_rcnn_b_wc2m_s3x_test_tuned.yaml",
                 "synthetic/mobile_parsing_rcnn_b_wc2m_synthetic.yaml"):
        cfg = load_config(str(REPO / "configs" / name), ["MODEL.TIMMNETS.PRETRAINED", False])
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        assert (h.UV_CONFIDENCE.ENABLED, h.UV_CONFIDENCE.TYPE, h.SEGM_CONFIDENCE.ENABLED) == (True, "indep_aniso", True)
        model = build_model(cfg)
        # the synthetic config trains its (random-init) BN: BN scales / shifts become parameters there
        want = 3_415_221 if "synthetic" not in name else 3_452_165
        assert count_parameters(model) == want
        assert count_parameters(model.roi_heads.densepose_predictor) == 157_850
