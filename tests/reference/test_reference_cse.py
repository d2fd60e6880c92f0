"""Live oracle, continuous surface embeddings (issue 15): densepose_fnl's CSE models agree with the official
code given the same weights.

The authors' Mobile Parsing R-CNN B-CSE (DensePoseFnL) and detectron2's densepose_rcnn_R_50_FPN_soft_s1x
(projects/DensePose/configs/cse). The peer (peer_scripts/cse_reference.py) builds each from its own YAML with
random init (MODEL.WEIGHTS and INIT_FILE empty: nothing is downloaded), draws the SMPL embedder's 27,554 x 256
`features` buffer and its 256 x 16 `embeddings` projection at random (a synthetic feature buffer: the real one
is not available offline), calibrates the BN statistics, saves the state dict and runs DefaultPredictor
(score threshold 0, K detections, with and without resizing). We load that file strictly (the features buffer
comes from it: INIT_FILE empty) and compare boxes (1e-3 px), scores (1e-5), the predictor's embedding and
coarse segmentation maps (1e-4) and the vertex embeddings `roi_heads.embedder("smpl_27554")` (1e-5).
Sizes are kept small (one real image at 320 px and a 224-256 px synthetic one, native and at shortest side
256; 100 RPN proposals) so the test stays short.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from peer import SHARED_PEER, our_opts, run_peer

from densepose_fnl.config import load_config
from densepose_fnl.engine import DefaultPredictor
from densepose_fnl.structures import DensePoseEmbeddingPredictorOutput

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = REPO.parent / "shared" / "data" / "densepose_demo" / "demo_im.jpg"
D2_CSE = SHARED_PEER / "detectron2" / "projects" / "DensePose" / "configs" / "cse"
K = 4
MIN_SIZES = [0, 256]
# nothing downloaded on either side: no ImageNet weights, zero features until the state dict fills them
NO_FILES = ["MODEL.WEIGHTS", "", "MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS.smpl_27554.INIT_FILE", ""]
# 100 proposals instead of 1000: the box head on 1000 RoIs is most of the R50 model's time, and the same
# setting on both sides compares the same thing
COMMON = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", K,
          "MODEL.RPN.POST_NMS_TOPK_TEST", 100] + NO_FILES
MODELS = [
    {"name": "authors_b_cse", "kind": "authors",
     "config": str(SHARED_PEER / "DensePoseFnL" / "configs" / "mobile_parsing_rcnn_b_cse_s3x.yaml"),
     "opts": ["MODEL.TIMMNETS.PRETRAINED", False] + COMMON, "maps": (64, 64)},
    {"name": "R_50_FPN_soft_s1x", "kind": "detectron2", "config": str(D2_CSE / "densepose_rcnn_R_50_FPN_soft_s1x.yaml"),
     "opts": COMMON, "maps": (112, 112)},
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """demo_im.jpg shrunk to 320 px high and one synthetic image, as files for both sides."""
    from densepose_fnl.data.synthetic import render_synthetic_image

    d = tmp_path_factory.mktemp("images")
    demo = cv2.imread(str(DEMO_IMAGE))
    h, w = demo.shape[:2]
    cv2.imwrite(str(d / "demo_320.png"), cv2.resize(demo, (round(w * 320 / h), 320), interpolation=cv2.INTER_AREA))
    synthetic, _, _ = render_synthetic_image(np.random.default_rng(7), min_size=224, max_size=256)
    cv2.imwrite(str(d / "synthetic.png"), synthetic)
    return [str(d / "demo_320.png"), str(d / "synthetic.png")]


@pytest.fixture(scope="module")
def reference(peer_python, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer_cse_forward")
    models = [{k: m[k] for k in ("name", "kind", "config", "opts")} for m in MODELS]
    spec = {"models": models, "images": images, "min_sizes": MIN_SIZES, "calib_image": images[0], "seed": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    run_peer("cse_reference.py", "forward", out / "spec.json", out, python=peer_python, timeout=900)
    return out


@pytest.mark.parametrize("model", MODELS, ids=[m["name"] for m in MODELS])
def test_same_weights_same_embeddings(reference, images, model):
    ref = torch.load(reference / f"{model['name']}_outputs.pth", weights_only=False)
    assert ref["calibrated_layers"] > 0 and ref["predictor_type"] == "DensePoseEmbeddingPredictor"
    compared = 0
    for min_size in MIN_SIZES:
        cfg = load_config(model["config"], model["opts"] + our_opts(model) + [
            "INPUT.MIN_SIZE_TEST", min_size, "MODEL.WEIGHTS", str(reference / f"{model['name']}.pth")])
        predictor = DefaultPredictor(cfg)  # strict loading: every weight and the features buffer from the peer
        embedder = predictor.model.roi_heads.embedder
        assert embedder.mesh_names == tuple(ref["vertex_embeddings"])
        for mesh, want in ref["vertex_embeddings"].items():
            assert want.abs().sum() > 0, f"{mesh}: the reference's vertex embeddings are zero"
            with torch.no_grad():
                torch.testing.assert_close(embedder(mesh), want, atol=1e-5, rtol=0, msg=f"{mesh} vertex embeddings")
        for path in images:
            key = f"{Path(path).name}@{min_size}"
            want = ref[key]
            assert want["output_type"] == "DensePoseEmbeddingPredictorOutput"
            with torch.no_grad():
                inst = predictor(cv2.imread(path))["instances"]
            n = len(want["scores"])
            assert n > 0, f"{key}: the reference found no detection (calibration failed)"
            assert len(inst) == n, f"{key}: {len(inst)} detections, reference {n}"
            torch.testing.assert_close(inst.pred_boxes, want["boxes"], atol=1e-3, rtol=0, msg=f"{key} boxes")
            torch.testing.assert_close(inst.scores, want["scores"], atol=1e-5, rtol=0, msg=f"{key} scores")
            assert torch.equal(inst.pred_classes, want["classes"]), key
            dp = inst.pred_densepose
            assert isinstance(dp, DensePoseEmbeddingPredictorOutput)
            for field in ("embedding", "coarse_segm"):
                assert tuple(want[field].shape[-2:]) == model["maps"], f"{key} {field} size"
                assert want[field].abs().sum() > 0, f"{key}: the reference's {field} is zero"
                torch.testing.assert_close(getattr(dp, field), want[field], atol=1e-4, rtol=0, msg=f"{key} {field}")
            compared += 1
    assert compared == len(images) * len(MIN_SIZES)
