"""dp_uv_confidence: the UV standard deviation of chart-confidence results as a heat map with a colour bar."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from densepose_fnl.structures import DensePoseChartResult, DensePoseChartResultWithConfidences, Instances
from densepose_fnl.vis import VISUALIZERS, build_visualizer
from densepose_fnl.vis.uv_confidence import UVConfidenceVisualizer, uv_sigma_map

ROOT = Path(__file__).resolve().parents[1]


def _result(h=40, w=30, aniso=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[5:35, 4:26] = torch.randint(1, 25, (30, 22), generator=g)
    uv = torch.rand(2, h, w, generator=g) * (labels > 0)
    fg = (labels > 0).float()
    conf = {"sigma_2": torch.randn(h, w, generator=g) * fg}
    if aniso:
        conf.update(kappa_u=torch.randn(h, w, generator=g) * fg, kappa_v=torch.randn(h, w, generator=g) * fg)
    return DensePoseChartResultWithConfidences(labels=labels, uv=uv, **conf)


def test_sigma_is_the_per_axis_standard_deviation_of_the_uv_covariance():
    r = _result()
    s = uv_sigma_map(r, epsilon=0.02)
    fg = (r.labels > 0).numpy()
    var = F.softplus(r.sigma_2) + 0.02 + (r.kappa_u ** 2 + r.kappa_v ** 2) / 2
    np.testing.assert_allclose(s[fg], torch.sqrt(var).numpy()[fg], rtol=1e-6)
    assert np.isnan(s[~fg]).all()
    iso = _result(aniso=False)
    np.testing.assert_allclose(uv_sigma_map(iso)[fg], torch.sqrt(F.softplus(iso.sigma_2) + 0.01).numpy()[fg], rtol=1e-6)
    assert uv_sigma_map(DensePoseChartResult(r.labels, r.uv)) is None


def test_heat_map_inside_the_persons_and_a_colour_bar_at_the_right_edge():
    image = np.full((120, 200, 3), 90, np.uint8)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 60.0], [60.0, 50.0, 90.0, 90.0]])
    results = [_result(seed=1), _result(seed=2)]
    assert "dp_uv_confidence" in VISUALIZERS
    out = build_visualizer("dp_uv_confidence").visualize(image, boxes, results)
    assert out.shape == image.shape and (image == 90).all()  # input untouched
    changed = (out != image).any(axis=2)
    fg = np.zeros(image.shape[:2], bool)
    for (x0, y0, _, _), r in zip(boxes.long().tolist(), results):
        fg[y0:y0 + 40, x0:x0 + 30] = (r.labels > 0).numpy()
    assert changed[fg].all()
    left = changed[:, :120]  # away from the colour bar: only the persons' pixels change
    assert not left[~fg[:, :120]].any()
    assert changed[:, 170:].any()  # the bar and its labels
    # one colour scale for all persons: fixed vmin / vmax give the same picture as the data's own range
    sig = np.concatenate([uv_sigma_map(r)[(r.labels > 0).numpy()] for r in results])
    fixed = UVConfidenceVisualizer(vmin=float(sig.min()), vmax=float(sig.max())).visualize(image, boxes, results)
    assert (fixed == out).all()


def test_plain_results_are_left_as_they_are_and_combine_with_other_visualisers():
    image = np.full((80, 100, 3), 60, np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 50.0]])
    r = _result()
    plain = [DensePoseChartResult(r.labels, r.uv)]
    assert (build_visualizer("dp_uv_confidence").visualize(image, boxes, plain) == image).all()
    both = build_visualizer("bbox,dp_uv_confidence").visualize(image, boxes, [r], [0.9])
    assert (both != image).any()


def test_apply_net_show_dp_uv_confidence(tmp_path):
    from densepose_fnl.modeling.densepose.predictor import DensePoseChartWithConfidencePredictor

    spec = importlib.util.spec_from_file_location("apply_net_uvconf", ROOT / "tools" / "apply_net.py")
    apply_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apply_net)
    torch.manual_seed(0)
    with torch.no_grad():
        raw = DensePoseChartWithConfidencePredictor(8, uv_confidence="iid_iso", segm_confidence=True)(
            torch.randn(1, 8, 4, 4))

    class ConfPredictor:
        def __init__(self, cfg):
            pass

        def __call__(self, image):
            return {"instances": Instances(image.shape[:2], pred_boxes=torch.tensor([[8.0, 6.0, 60.0, 70.0]]),
                                           scores=torch.tensor([0.95]), pred_classes=torch.zeros(1, dtype=torch.long),
                                           pred_densepose=raw)}

    (tmp_path / "cfg.yaml").write_text("MODEL:\n  DEVICE: cpu\n  ROI_DENSEPOSE_HEAD:\n    UV_CONFIDENCE:\n"
                                       "      ENABLED: True\n      EPSILON: 0.05\n")
    (tmp_path / "model.pth").write_bytes(b"fake")
    cv2.imwrite(str(tmp_path / "im.png"), np.full((80, 120, 3), 128, np.uint8))
    seen = {}
    orig = apply_net.build_visualizer

    def spy(*a, **kw):
        seen.update(kw)
        return orig(*a, **kw)

    apply_net.build_visualizer = spy
    rc = apply_net.main(["show", str(tmp_path / "cfg.yaml"), str(tmp_path / "model.pth"), str(tmp_path / "im.png"),
                         "bbox,dp_uv_confidence", "--output", str(tmp_path / "out.png")],
                        predictor_factory=ConfPredictor)
    assert rc == 0 and seen["uv_confidence_epsilon"] == pytest.approx(0.05)
    out = cv2.imread(str(tmp_path / "out.png"))
    assert out.shape == (80, 120, 3)
