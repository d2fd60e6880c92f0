"""Live oracle, chart confidences (issue 14): densepose_fnl's WC1 / WC2 / WC1M / WC2M models agree with the
official code given the same weights.

* forward: the authors' Mobile Parsing R-CNN B-WC2M (DensePoseFnL) and detectron2's R_50_FPN_WC1M_s1x and
  R_50_FPN_DL_WC2M_s1x. The peer (peer_scripts/confidence_reference.py) builds each with random init,
  calibrates its BN statistics, saves the state dict and runs DefaultPredictor (score threshold 0, K
  detections, with and without resizing); we load that file strictly and compare boxes, scores, classes,
  every raw map (coarse / fine segmentation rescaled by their confidences, U, V, sigma_2, kappa_u, kappa_v,
  fine / coarse segmentation confidences) and the per-person results (labels, UV and the confidences over
  the box). Tolerances as issue 12: boxes 1e-3 px, maps 1e-4, labels identical; segmentation logits
  rescaled by their confidences: 1e-4 before the rescaling, 1e-4 x the largest confidence after; labels
  identical but at float ties (chart_compare.py).
* losses: detectron2's DensePoseChartWithConfidencePredictor (random init) and DensePoseChartWithConfidenceLoss
  of WC1, WC2, WC1M, WC2M and the authors' B-WC2M config on the same head features and the same proposals
  with ground truth (points inside and outside the proposals, background points, coarse masks, an instance
  without DensePose): every loss term (loss_densepose_UV, _I, _S) to 1e-5 and its gradients of every
  predictor parameter; the iid_iso / indep_aniso Gaussian NLLs alone on arbitrary values to 1e-5.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from chart_compare import assert_same_chart, tie_pixels
from peer import SHARED_PEER, our_opts, run_peer

from densepose_fnl.config import load_config
from densepose_fnl.engine import DefaultPredictor
from densepose_fnl.modeling.densepose.predictor import build_densepose_predictor
from densepose_fnl.modeling.losses import iid_isotropic_gaussian_uv_nll, indep_anisotropic_gaussian_uv_nll
from densepose_fnl.modeling.registry import DENSEPOSE_LOSS_REGISTRY
from densepose_fnl.postprocess import densepose_chart_results
from densepose_fnl.structures import CONFIDENCE_NAMES, Instances
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative, DensePoseList

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = REPO.parent / "shared" / "data" / "densepose_demo" / "demo_im.jpg"
D2 = SHARED_PEER / "detectron2" / "projects" / "DensePose" / "configs"
AUTHORS_WC2M = str(SHARED_PEER / "DensePoseFnL" / "configs" / "mobile_parsing_rcnn_b_wc2m_s3x.yaml")
K = 5
MIN_SIZES = [0, 512]
COMMON = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", K]
CHART_FIELDS = ("coarse_segm", "fine_segm", "u", "v")
MODELS = [
    {"name": "authors_b_wc2m", "kind": "authors", "config": AUTHORS_WC2M,
     "opts": ["MODEL.TIMMNETS.PRETRAINED", False] + COMMON,
     "confidences": ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")},
    {"name": "R_50_FPN_WC1M_s1x", "kind": "detectron2", "config": str(D2 / "densepose_rcnn_R_50_FPN_WC1M_s1x.yaml"),
     "opts": COMMON, "confidences": ("sigma_2", "fine_segm_confidence", "coarse_segm_confidence")},
    {"name": "R_50_FPN_DL_WC2M_s1x", "kind": "detectron2",
     "config": str(D2 / "densepose_rcnn_R_50_FPN_DL_WC2M_s1x.yaml"), "opts": COMMON,
     "confidences": ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")},
]
# loss cases: (name, kind, config, head output channels, head output size)
LOSS_CASES = [
    ("R_50_FPN_WC1_s1x", "detectron2", str(D2 / "densepose_rcnn_R_50_FPN_WC1_s1x.yaml"), 512, 28),
    ("R_50_FPN_WC2_s1x", "detectron2", str(D2 / "densepose_rcnn_R_50_FPN_WC2_s1x.yaml"), 512, 28),
    ("R_50_FPN_WC1M_s1x", "detectron2", str(D2 / "densepose_rcnn_R_50_FPN_WC1M_s1x.yaml"), 512, 28),
    ("R_50_FPN_DL_WC2M_s1x", "detectron2", str(D2 / "densepose_rcnn_R_50_FPN_DL_WC2M_s1x.yaml"), 512, 28),
    ("authors_b_wc2m", "authors", AUTHORS_WC2M, 64, 32),
]


def _opts(kind):
    return ["MODEL.TIMMNETS.PRETRAINED", False] if kind == "authors" else []


# ---------------------------------------------------------------------------------------------- forward
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from densepose_fnl.data.synthetic import render_synthetic_image

    d = tmp_path_factory.mktemp("images")
    synthetic, _, _ = render_synthetic_image(np.random.default_rng(7), min_size=224, max_size=256)
    cv2.imwrite(str(d / "synthetic.png"), synthetic)
    return [str(DEMO_IMAGE), str(d / "synthetic.png")]


@pytest.fixture(scope="module")
def reference(peer_python, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer_confidence_forward")
    models = [{k: m[k] for k in ("name", "kind", "config", "opts")} for m in MODELS]
    spec = {"models": models, "images": images, "min_sizes": MIN_SIZES, "calib_image": images[0], "seed": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    run_peer("confidence_reference.py", "forward", out / "spec.json", out, python=peer_python, timeout=1200)
    return out


@pytest.mark.parametrize("model", MODELS, ids=[m["name"] for m in MODELS])
def test_same_weights_same_outputs_and_confidences(reference, images, model):
    ref = torch.load(reference / f"{model['name']}_outputs.pth", weights_only=False)
    assert ref["calibrated_layers"] > 0 and ref["predictor_type"] == "DensePoseChartWithConfidencePredictor"
    absent = [n for n in CONFIDENCE_NAMES if n not in model["confidences"]]
    compared = 0
    for min_size in MIN_SIZES:
        cfg = load_config(model["config"], model["opts"] + our_opts(model) + [
            "INPUT.MIN_SIZE_TEST", min_size, "MODEL.WEIGHTS", str(reference / f"{model['name']}.pth")])
        predictor = DefaultPredictor(cfg)  # strict loading: every weight, confidence layers too, from the peer
        for path in images:
            key = f"{Path(path).name}@{min_size}"
            want = ref[key]
            assert want["output_type"] == "DensePoseChartPredictorOutputWithConfidences"
            with torch.no_grad():
                inst = predictor(cv2.imread(path))["instances"]
            n = len(want["scores"])
            assert n > 0, f"{key}: the reference found no detection (calibration failed)"
            assert len(inst) == n, f"{key}: {len(inst)} detections, reference {n}"
            torch.testing.assert_close(inst.pred_boxes, want["boxes"], atol=1e-3, rtol=0, msg=f"{key} boxes")
            torch.testing.assert_close(inst.scores, want["scores"], atol=1e-5, rtol=0, msg=f"{key} scores")
            assert torch.equal(inst.pred_classes, want["classes"]), key
            dp = inst.pred_densepose
            atol_of = {}
            for field in CHART_FIELDS + model["confidences"]:
                assert want[field] is not None, f"{key}: the reference has no {field}"
                atol = 1e-4
                conf = f"{field}_confidence"
                if conf in model["confidences"]:
                    # segmentation logits times their confidence: the logits themselves to 1e-4, the products
                    # to 1e-4 times the largest confidence (by which any logit difference is multiplied)
                    torch.testing.assert_close(getattr(dp, field) / getattr(dp, conf), want[field] / want[conf],
                                               atol=1e-4, rtol=0, msg=f"{key} {field} / {conf}")
                    atol = 1e-4 * max(1.0, float(want[conf].max()))
                torch.testing.assert_close(getattr(dp, field), want[field], atol=atol, rtol=0, msg=f"{key} {field}")
                atol_of[field] = atol
            for field in absent:
                assert want[field] is None and getattr(dp, field) is None, f"{key} {field}"
            charts = densepose_chart_results(inst.pred_boxes, dp)
            assert len(charts) == n == len(want["results"])
            for i, (ours, theirs) in enumerate(zip(charts, want["results"])):
                ties = tie_pixels(inst.pred_boxes[i], dp.coarse_segm[i], dp.fine_segm[i],
                                  atol_of["coarse_segm"], atol_of["fine_segm"])
                assert_same_chart(f"{key} person {i}", ours, theirs["labels"], theirs["uv"], ties,
                                  {field: theirs[field] for field in model["confidences"]})
                for field in absent:
                    assert getattr(ours, field) is None and theirs[field] is None
            compared += 1
    assert compared == len(images) * len(MIN_SIZES)


# ----------------------------------------------------------------------------------------------- losses
def _loss_inputs():
    """Two images, four proposals (one without DensePose): points inside and outside their proposal,
    background points, 256 x 256 coarse masks with 15 labels; head features per case; UV-NLL terms."""
    g = torch.Generator().manual_seed(3)
    images = []
    for gt_boxes, shifts, has_dp in (([[10, 20, 90, 140], [50, 30, 120, 100]], [[-6, 4, 5, -8], [3, 3, 10, 2]],
                                      [True, False]),
                                     ([[5, 5, 60, 95], [30, 10, 150, 90]], [[8, -3, -10, 6], [-4, -5, 3, 4]],
                                      [True, True])):
        gt = torch.tensor(gt_boxes, dtype=torch.float32)
        dps = []
        for ok in has_dp:
            if not ok:
                dps.append(None)
                continue
            k = 60
            i = torch.randint(0, 25, (k,), generator=g)
            i[:5] = 0  # background points
            segm = torch.randint(0, 15, (256, 256), generator=g).float()
            segm[:, :40] = 0
            dps.append({"x": torch.rand(k, generator=g) * 255.0, "y": torch.rand(k, generator=g) * 255.0,
                        "i": i, "u": torch.rand(k, generator=g), "v": torch.rand(k, generator=g), "segm": segm})
        images.append({"image_size": (160, 200), "gt_boxes": gt,
                       "proposal_boxes": gt + torch.tensor(shifts, dtype=torch.float32), "densepose": dps})
    features = {name: torch.randn(4, c, s, s, generator=g) * 0.3 for name, _, _, c, s in LOSS_CASES}
    n = 500
    uv_terms = {k: torch.rand(n, generator=g) for k in ("u", "v", "u_gt", "v_gt")}
    uv_terms.update({k: torch.randn(n, generator=g) * 2 for k in ("sigma", "kappa_u", "kappa_v")})
    return {"images": images, "features": features, "uv_terms": uv_terms}


def _our_proposals(images):
    out = []
    for im in images:
        dps = [None if d is None else DensePoseDataRelative(d["x"], d["y"], d["i"], d["u"], d["v"], d["segm"].long())
               for d in im["densepose"]]
        out.append(Instances(tuple(im["image_size"]), proposal_boxes=im["proposal_boxes"], gt_boxes=im["gt_boxes"],
                             gt_classes=torch.zeros(len(dps), dtype=torch.long), gt_densepose=DensePoseList(dps)))
    return out


@pytest.fixture(scope="module")
def loss_reference(peer_python, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer_confidence_losses")
    inputs = _loss_inputs()
    torch.save(inputs, out / "inputs.pth")
    spec = {"cases": [{"name": n, "kind": kind, "config": c, "opts": _opts(kind)} for n, kind, c, _, _ in LOSS_CASES],
            "seed": 0}
    (out / "spec.json").write_text(json.dumps(spec))
    run_peer("confidence_reference.py", "losses", out / "spec.json", out / "inputs.pth", out, python=peer_python,
             timeout=900)
    return out, inputs


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_confidence_losses_equal_detectron2(loss_reference, case):
    import densepose_fnl.modeling.losses  # noqa: F401  (registers the losses)

    out, inputs = loss_reference
    name, kind, config, channels, _ = case
    ref = torch.load(out / f"{name}_losses.pth", weights_only=False)
    cfg = load_config(config, _opts(kind))
    predictor = build_densepose_predictor(cfg, channels)
    predictor.load_state_dict(torch.load(out / f"{name}_predictor.pth", weights_only=True), strict=True)
    loss = DENSEPOSE_LOSS_REGISTRY.get(cfg.MODEL.ROI_DENSEPOSE_HEAD.LOSS_NAME).from_config(cfg)
    outputs = predictor(inputs["features"][name])
    for field, want in ref["outputs"].items():
        got = getattr(outputs, field)
        if want is None:
            assert got is None, field
        else:
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"{name} {field}")
    losses = loss(_our_proposals(inputs["images"]), outputs)
    assert sorted(losses) == sorted(ref["losses"])
    uv_conf = cfg.MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.ENABLED
    assert ("loss_densepose_UV" in losses) == uv_conf and ("loss_densepose_U" in losses) == (not uv_conf)
    names = list(losses)
    for k, term in enumerate(names):
        want = ref["losses"][term]
        assert want != 0.0, f"{name} {term}: the reference term is 0 (inputs do not exercise it)"
        got = losses[term].item()
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), f"{name} {term}: {got} vs {want}"
        predictor.zero_grad()
        losses[term].backward(retain_graph=k + 1 < len(names))
        grads = {p: t.grad for p, t in predictor.named_parameters() if t.grad is not None}
        assert sorted(grads) == sorted(ref["grads"][term]), f"{name} {term}: parameters reached"
        for p, g in grads.items():
            r = ref["grads"][term][p]
            torch.testing.assert_close(g, r, atol=1e-5 * max(1.0, float(r.abs().max())), rtol=1e-4,
                                       msg=f"{name} {term} d/d{p}")
    # the Gaussian NLLs alone
    t = inputs["uv_terms"]
    eps = cfg.MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.EPSILON
    iid = iid_isotropic_gaussian_uv_nll(t["u"], t["v"], t["sigma"], t["u_gt"], t["v_gt"], eps).item()
    aniso = indep_anisotropic_gaussian_uv_nll(t["u"], t["v"], t["sigma"], t["kappa_u"], t["kappa_v"], t["u_gt"],
                                              t["v_gt"], eps).item()
    assert abs(iid - ref["iid_iso_nll"]) <= 1e-5 * max(1.0, abs(ref["iid_iso_nll"]))
    assert abs(aniso - ref["indep_aniso_nll"]) <= 1e-5 * max(1.0, abs(ref["indep_aniso_nll"]))
