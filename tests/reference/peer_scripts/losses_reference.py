"""Peer side of test_reference_losses (reference venv): detectron2's training losses on a given batch.

usage: losses_reference.py SPEC.json OUT_DIR
SPEC: {"models": [{"name", "kind", "config", "opts", "full_grads": bool, "randomize_embedders": bool}],
       "scenes": [[{"image": path, "annotations": [COCO-DensePose annotation dicts: bbox (XYWH), optional dp_x /
       dp_y / dp_I / dp_U / dp_V / dp_vertex / ref_model / dp_masks]}]], "seed": int, "sample_seed": int}
Per model: random init (torch seed), CSE mesh embedders drawn at random if asked (cse_reference), BN calibrated
on the first image (peer_models.calibrate), state dict saved
as OUT_DIR/<name>.pth; the lr / weight decay / momentum / nesterov of every parameter in detectron2's
build_optimizer(cfg, model); then, from the saved weights, for each scene in training mode as one batch (no
resizing, no flip: the images go in as they are, the ground truth as detectron2's mapper would make it: Boxes,
class 0, DensePoseList): torch.manual_seed(sample_seed) (the RPN / ROI-head sampling draws from torch's global
generator), the loss dict and the gradients of the summed loss. Written to OUT_DIR/<name>_losses.pth:
{"calibrated_layers": int, "optimizer": {param: [lr, weight_decay, momentum, nesterov]},
 "scenes": [{"losses": {name: float}, "grad_norms": {param: float}}], "grads": {param: tensor} (scene 0, if
 full_grads)}.
"""
import json
import os
import sys

import cv2
import torch

from densepose.structures import DensePoseDataRelative, DensePoseList
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from peer_models import calibrate, make_cfg

spec = json.load(open(sys.argv[1]))
out_dir = sys.argv[2]


def batch(scene):
    inputs = []
    for item in scene:
        im = cv2.imread(item["image"])
        h, w = im.shape[:2]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in item["annotations"]], dtype=torch.float32).reshape(-1, 4)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
        dps = [DensePoseDataRelative(dict(a)) if "dp_x" in a else None for a in item["annotations"]]
        inst.gt_densepose = DensePoseList(dps, boxes, (h, w))
        inputs.append({"image": torch.as_tensor(im.transpose(2, 0, 1).copy()), "instances": inst,
                       "height": h, "width": w})
    return inputs


def losses(model, inputs):
    torch.manual_seed(spec["sample_seed"])
    with EventStorage(0):
        return model(inputs)


for m in spec["models"]:
    torch.manual_seed(spec["seed"])
    cfg = make_cfg(m)
    model = build_model(cfg)
    if m.get("randomize_embedders"):  # CSE: non-trivial vertex embeddings (zeros without INIT_FILE)
        from cse_reference import randomize_embedders

        randomize_embedders(model.roi_heads.embedder, spec["seed"])
    n = calibrate(model, cv2.imread(spec["scenes"][0][0]["image"]))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": start}, os.path.join(out_dir, f"{m['name']}.pth"))
    result = {"calibrated_layers": n, "scenes": []}
    for s, scene in enumerate(spec["scenes"]):
        inputs = batch(scene)
        model.load_state_dict(start)
        model.train()
        if s == 0:  # the optimizer detectron2 trains with: lr and weight decay of every parameter
            groups = build_optimizer(cfg, model).param_groups
            names = {id(p): k for k, p in model.named_parameters()}
            result["optimizer"] = {names[id(p)]: [g["lr"], g["weight_decay"], g["momentum"], g["nesterov"]]
                                   for g in groups for p in g["params"]}
        loss_dict = losses(model, inputs)
        model.zero_grad()
        sum(loss_dict.values()).backward()
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        result["scenes"].append({"losses": {k: float(v) for k, v in loss_dict.items()},
                                 "grad_norms": {k: float(g.double().norm()) for k, g in grads.items()}})
        if s == 0 and m.get("full_grads"):
            result["grads"] = grads
        print(m["name"], s, {k: round(float(v), 5) for k, v in loss_dict.items()}, flush=True)
    torch.save(result, os.path.join(out_dir, f"{m['name']}_losses.pth"))
