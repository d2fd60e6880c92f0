"""Live oracle, forward pass: the same weights give the same boxes, scores, classes, raw chart maps and
per-person labels / UV in densepose_fnl as in the authors' implementation (Mobile Parsing R-CNN B) and in
detectron2's DensePose (R_50_FPN_s1x, _s1x_legacy, _DL_s1x).

The peer (tests/reference/peer_scripts/forward_reference.py, reference venv) builds each model with random
init, calibrates its BN statistics on one image (otherwise a random model has exploding activations and
no detections), saves the state dict in detectron2's layout and runs detectron2's DefaultPredictor with
score threshold 0 and at most K detections, with and without resizing. We load that file strictly with our
checkpointer and run our DefaultPredictor on the same images.
Tolerances (issue 12): boxes 1e-3 px, maps 1e-4, labels identical but at float ties
(chart_compare.py)."""
import json
from pathlib import Path

import cv2
import pytest
import torch

from chart_compare import assert_same_chart, tie_pixels
from peer import SHARED_PEER, our_opts, run_peer

from densepose_fnl.config import load_config
from densepose_fnl.engine import DefaultPredictor
from densepose_fnl.postprocess import densepose_chart_results

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = REPO.parent / "shared" / "data" / "densepose_demo" / "demo_im.jpg"
D2 = SHARED_PEER / "detectron2" / "projects" / "DensePose" / "configs"
K = 5
MIN_SIZES = [0, 512]
COMMON = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", K]
MODELS = [
    {"name": "authors_b", "kind": "authors", "config": str(SHARED_PEER / "DensePoseFnL" / "configs" /
                                                            "mobile_parsing_rcnn_b_s3x.yaml"),
     "opts": ["MODEL.TIMMNETS.PRETRAINED", False] + COMMON},
    {"name": "R_50_FPN_s1x", "kind": "detectron2", "config": str(D2 / "densepose_rcnn_R_50_FPN_s1x.yaml"),
     "opts": COMMON},
    {"name": "R_50_FPN_s1x_legacy", "kind": "detectron2",
     "config": str(D2 / "densepose_rcnn_R_50_FPN_s1x_legacy.yaml"), "opts": COMMON},
    {"name": "R_50_FPN_DL_s1x", "kind": "detectron2", "config": str(D2 / "densepose_rcnn_R_50_FPN_DL_s1x.yaml"),
     "opts": COMMON},
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """demo_im.jpg and one image the project makes (the synthetic generator), as files for both sides."""
    import numpy as np

    from densepose_fnl.data.synthetic import render_synthetic_image

    d = tmp_path_factory.mktemp("images")
    synthetic, _, _ = render_synthetic_image(np.random.default_rng(7), min_size=224, max_size=256)
    cv2.imwrite(str(d / "synthetic.png"), synthetic)
    return [str(DEMO_IMAGE), str(d / "synthetic.png")]


@pytest.fixture(scope="module")
def reference(peer_python, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer_forward")
    spec = {"models": MODELS, "images": images, "min_sizes": MIN_SIZES, "calib_image": images[0], "seed": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    run_peer("forward_reference.py", out / "spec.json", out, python=peer_python, timeout=900)
    return out


@pytest.mark.parametrize("model", MODELS, ids=[m["name"] for m in MODELS])
def test_same_weights_same_outputs(reference, images, model):
    ref = torch.load(reference / f"{model['name']}_outputs.pth", weights_only=False)
    assert ref["calibrated_layers"] > 0
    compared = 0
    for min_size in MIN_SIZES:
        cfg = load_config(model["config"], model["opts"] + our_opts(model) + [
            "INPUT.MIN_SIZE_TEST", min_size, "MODEL.WEIGHTS", str(reference / f"{model['name']}.pth")])
        predictor = DefaultPredictor(cfg)  # strict loading: every weight comes from the peer's file
        for path in images:
            key = f"{Path(path).name}@{min_size}"
            want = ref[key]
            with torch.no_grad():
                inst = predictor(cv2.imread(path))["instances"]
            n = len(want["scores"])
            assert n > 0, f"{key}: the reference found no detection (calibration failed)"
            assert len(inst) == n, f"{key}: {len(inst)} detections, reference {n}"
            torch.testing.assert_close(inst.pred_boxes, want["boxes"], atol=1e-3, rtol=0, msg=f"{key} boxes")
            torch.testing.assert_close(inst.scores, want["scores"], atol=1e-5, rtol=0, msg=f"{key} scores")
            assert torch.equal(inst.pred_classes, want["classes"]), key
            dp = inst.pred_densepose
            for field in ("coarse_segm", "fine_segm", "u", "v"):
                torch.testing.assert_close(getattr(dp, field), want[field], atol=1e-4, rtol=0, msg=f"{key} {field}")
            charts = densepose_chart_results(inst.pred_boxes, dp)
            assert len(charts) == n
            for i, (ours, labels, uv) in enumerate(zip(charts, want["labels"], want["uv"])):
                ties = tie_pixels(inst.pred_boxes[i], dp.coarse_segm[i], dp.fine_segm[i], 1e-4, 1e-4)
                assert_same_chart(f"{key} person {i}", ours, labels, uv, ties)
            compared += 1
    assert compared == len(images) * len(MIN_SIZES)
