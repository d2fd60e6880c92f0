"""Peer side of test_reference_forward (runs in the reference venv: detectron2 + DensePose + DensePoseFnL).

usage: forward_reference.py SPEC.json OUT_DIR
SPEC: {"models": [{"name", "kind": "authors"|"detectron2", "config", "opts": [...]}], "images": [paths],
       "min_sizes": [0, 512], "calib_image": path, "seed": int}
Per model: random init (torch seed), BN statistics calibrated on `calib_image` (every BN / FrozenBN takes the
per-channel mean / variance of its input in one forward pass, so later layers see calibrated inputs), the
state dict saved as OUT_DIR/<name>.pth ({"model": ...}, detectron2's checkpoint layout), then
DefaultPredictor on every image at every MIN_SIZE_TEST; the outputs (boxes, scores, classes, raw chart maps,
per-person labels / UV from DensePoseResultExtractor) go to OUT_DIR/<name>_outputs.pth.
"""
import json
import os
import sys

import cv2
import torch

spec = json.load(open(sys.argv[1]))
out_dir = sys.argv[2]

from densepose.vis.extractor import DensePoseResultExtractor  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from peer_models import calibrate, make_cfg  # noqa: E402


images = {p: cv2.imread(p) for p in spec["images"]}
calib = cv2.imread(spec["calib_image"])
for m in spec["models"]:
    torch.manual_seed(spec["seed"])
    cfg = make_cfg(m)
    model = build_model(cfg).eval()
    n = calibrate(model, calib)
    weights = os.path.join(out_dir, f"{m['name']}.pth")
    torch.save({"model": model.state_dict()}, weights)
    results = {"calibrated_layers": n}
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
            results[f"{os.path.basename(path)}@{min_size}"] = {
                "boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes,
                "coarse_segm": dp.coarse_segm, "fine_segm": dp.fine_segm, "u": dp.u, "v": dp.v,
                "labels": [r.labels for r in charts], "uv": [r.uv for r in charts]}
    torch.save(results, os.path.join(out_dir, f"{m['name']}_outputs.pth"))
    print(m["name"], "calibrated", n, "layers", flush=True)
