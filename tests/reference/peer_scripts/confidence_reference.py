"""Peer side of test_reference_confidence (reference venv: detectron2 + DensePose + DensePoseFnL): chart
confidences (WC1 / WC2 / WC1M / WC2M) in the official code.

usage: confidence_reference.py forward SPEC.json OUT_DIR
       confidence_reference.py losses SPEC.json INPUTS.pth OUT_DIR

forward: SPEC {"models": [{"name", "kind": "authors"|"detectron2", "config", "opts"}], "images": [paths],
  "min_sizes": [...], "calib_image": path, "seed": int}. Per model: random init (torch seed), BN statistics
  calibrated on `calib_image` (each BN / FrozenBN takes the per-channel mean / variance of its input in one
  forward pass), state dict saved as OUT_DIR/<name>.pth ({"model": ...}); DefaultPredictor on every image at
  every MIN_SIZE_TEST; OUT_DIR/<name>_outputs.pth holds boxes, scores, classes, every field of the predictor
  output (chart maps and confidences, None when absent) and the per-person results of
  DensePoseResultExtractor (labels, uv and the confidences over the box).

losses: SPEC {"cases": [{"name", "kind", "config", "opts"}], "seed": int}; INPUTS.pth {"features": {case name:
  (N, C, H, W) head output}, "images": [{"image_size", "proposal_boxes" (n, 4) XYXY, "gt_boxes" (n, 4),
  "densepose": [None or {"x", "y", "i", "u", "v", "segm"}]}], "uv_terms": {"u", "v", "sigma", "kappa_u",
  "kappa_v", "u_gt", "v_gt"}}.
  Per case: detectron2's DensePoseChartWithConfidencePredictor built from the config (torch seed), its state
  dict saved as OUT_DIR/<name>_predictor.pth; predictor(features) -> DensePoseChartWithConfidenceLoss on the
  proposals; per loss term its value and the gradients of the predictor parameters; and detectron2's
  IIDIsotropicGaussianUVLoss / IndepAnisotropicGaussianUVLoss on `uv_terms` with the case's epsilon.
  Written to OUT_DIR/<name>_losses.pth.
"""
import json
import os
import sys
from types import SimpleNamespace

import cv2
import torch

from peer_models import calibrate, make_cfg  # noqa: E402  (this folder: shared by the peer scripts)

CONFIDENCE_FIELDS = ("sigma_1", "sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")


def forward(spec, out_dir):
    from densepose.vis.extractor import DensePoseResultExtractor
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model

    images = {p: cv2.imread(p) for p in spec["images"]}
    calib = cv2.imread(spec["calib_image"])
    for m in spec["models"]:
        torch.manual_seed(spec["seed"])
        cfg = make_cfg(m)
        model = build_model(cfg).eval()
        n = calibrate(model, calib)
        torch.save({"model": model.state_dict()}, os.path.join(out_dir, f"{m['name']}.pth"))
        results = {"calibrated_layers": n, "predictor_type": type(model.roi_heads.densepose_predictor).__name__}
        for min_size in spec["min_sizes"]:
            c = cfg.clone()
            c.defrost()
            c.INPUT.MIN_SIZE_TEST = min_size
            c.MODEL.WEIGHTS = ""
            predictor = DefaultPredictor(c)
            predictor.model.load_state_dict(model.state_dict())
            for path, im in images.items():
                with torch.no_grad():
                    inst = predictor(im)["instances"]
                dp = inst.pred_densepose
                charts, _ = DensePoseResultExtractor()(inst)
                entry = {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes,
                         "output_type": type(dp).__name__,
                         "results": [{k: getattr(r, k) for k in ("labels", "uv") + CONFIDENCE_FIELDS}
                                     for r in charts]}
                for f in ("coarse_segm", "fine_segm", "u", "v") + CONFIDENCE_FIELDS:
                    entry[f] = getattr(dp, f, None)
                results[f"{os.path.basename(path)}@{min_size}"] = entry
        torch.save(results, os.path.join(out_dir, f"{m['name']}_outputs.pth"))
        print(m["name"], "calibrated", n, "layers", results["predictor_type"], flush=True)


def proposals_with_gt(images):
    from detectron2.structures import Boxes, Instances

    out = []
    for im in images:
        inst = Instances(tuple(im["image_size"]))
        inst.proposal_boxes = Boxes(im["proposal_boxes"])
        inst.gt_boxes = Boxes(im["gt_boxes"])
        inst.gt_classes = torch.zeros(len(im["gt_boxes"]), dtype=torch.int64)
        # the loss reads x, y, i, u, v and segm of each instance's DensePose data (DensePoseDataRelative)
        inst.gt_densepose = [None if d is None else SimpleNamespace(**d) for d in im["densepose"]]
        out.append(inst)
    return out


def losses(spec, inputs, out_dir):
    from densepose.modeling.losses import DensePoseChartWithConfidenceLoss
    from densepose.modeling.losses.chart_with_confidences import (IIDIsotropicGaussianUVLoss,
                                                                  IndepAnisotropicGaussianUVLoss)
    from densepose.modeling.predictors import DensePoseChartWithConfidencePredictor

    for case in spec["cases"]:
        features = inputs["features"][case["name"]]
        cfg = make_cfg(case)
        torch.manual_seed(spec["seed"])
        predictor = DensePoseChartWithConfidencePredictor(cfg, features.shape[1])
        torch.save(predictor.state_dict(), os.path.join(out_dir, f"{case['name']}_predictor.pth"))
        loss = DensePoseChartWithConfidenceLoss(cfg)
        outputs = predictor(features)
        loss_dict = loss(proposals_with_gt(inputs["images"]), outputs)
        result = {"losses": {}, "grads": {}, "outputs": {}}
        for f in ("coarse_segm", "fine_segm", "u", "v") + CONFIDENCE_FIELDS:
            t = getattr(outputs, f, None)
            result["outputs"][f] = None if t is None else t.detach().clone()
        names = list(loss_dict)
        for k, name in enumerate(names):
            predictor.zero_grad()
            loss_dict[name].backward(retain_graph=k + 1 < len(names))
            result["losses"][name] = loss_dict[name].detach().double().item()
            result["grads"][name] = {p: t.grad.detach().clone() for p, t in predictor.named_parameters()
                                     if t.grad is not None}
        # the Gaussian NLLs alone, on arbitrary values
        t = inputs["uv_terms"]
        eps = cfg.MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.EPSILON
        result["iid_iso_nll"] = IIDIsotropicGaussianUVLoss(eps)(
            t["u"], t["v"], t["sigma"], t["u_gt"], t["v_gt"]).double().item()
        result["indep_aniso_nll"] = IndepAnisotropicGaussianUVLoss(eps)(
            t["u"], t["v"], t["sigma"], t["kappa_u"], t["kappa_v"], t["u_gt"], t["v_gt"]).double().item()
        result["loss_names"] = names
        torch.save(result, os.path.join(out_dir, f"{case['name']}_losses.pth"))
        print(case["name"], {k: round(v, 6) for k, v in result["losses"].items()}, flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    spec = json.load(open(sys.argv[2]))
    if mode == "forward":
        forward(spec, sys.argv[3])
    elif mode == "losses":
        losses(spec, torch.load(sys.argv[3], weights_only=False), sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")
