"""Live oracle, training: from the same weights on the same batch, densepose_fnl's training losses (RPN,
box, DensePose S / I / U / V) equal detectron2's (and the authors', for Mobile Parsing R-CNN B), and so do
the gradients and the optimizer.

The peer (peer_scripts/losses_reference.py, reference venv) builds each model with random init and BN
calibrated (as the forward test), saves the weights, and trains on each scene as one batch; we load the
weights strictly and do the same. The batches bypass both data mappers (the images go in unresized and
unflipped, the ground truth built directly in each project's structures), so only the models are compared.

* The ground truth: the real DensePose-COCO annotation of ../shared/data/densepose_demo/demo_dp_single_ann.pkl
  (125 points, converted from crop pixels to the 256 box frame) on demo_im.jpg, with coarse dp_masks made
  for it, plus a person without DensePose; and an image from our synthetic generator with its annotations
  (points and masks); demo_im at half size, to keep the test inside the CI budget. A second scene, the
  synthetic image alone, drops one person's dp_masks: with a mask missing in the batch both projects skip
  the coarse-segmentation term.
* Sampling: the RPN and ROI heads sample anchors / proposals with torch.randperm from torch's global
  generator. Both projects draw in the same order with the same sizes, so seeding it to the same value just
  before the forward pass makes the sampling identical: for B with its config's batch sizes of anchors and
  RoIs. The anchors' order never depends on scores, so the RPN sampling is
  identical for every model; for R50-FPN the RoI sampling is not (see ALL_ROIS), so there every proposal is
  taken.
* The training step: the same loss dict, the same gradients, and the same optimizer (lr, weight decay,
  momentum of every parameter in each project's build_optimizer) make the same step. The losses after the
  step are not compared: the RoIs sampled after it depend on NMS / top-k decisions that a 1e-5 change of a
  score can flip.
Tolerances: losses 1e-5 (relative, with 1e-6 absolute); gradients in aggregate (see the test: per-parameter
norms within 5e-3 in total, B's whole gradient cosine >= 0.9999 and relative L2 <= 2e-2).
"""
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from peer import SHARED_PEER, run_peer

from densepose_fnl.checkpoint import DensePoseCheckpointer
from densepose_fnl.config import load_config
from densepose_fnl.data.synthetic import render_synthetic_image
from densepose_fnl.modeling import build_model
from densepose_fnl.solver import build_optimizer
from densepose_fnl.structures import Instances
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative, DensePoseList

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO.parent / "shared" / "data" / "densepose_demo"
D2 = SHARED_PEER / "detectron2" / "projects" / "DensePose" / "configs"
SEED, SAMPLE_SEED = 0, 1234
# R50-FPN's randomly initialised RPN scores proposals with near-ties (e.g. 43.16724 / 43.16721 in one project,
# 43.16729 / 43.16706 in the other): two neighbours swap places in the sorted proposal list, and the sampled
# RoI *indices* then pick different boxes. Taking every RoI makes the sampled set order-free (of the top 200
# proposals: the DensePose head of every foreground RoI is the cost).
ALL_ROIS = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 100000, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200]
MODELS = [
    {"name": "authors_b", "kind": "authors", "full_grads": True,
     "config": str(SHARED_PEER / "DensePoseFnL" / "configs" / "mobile_parsing_rcnn_b_s3x.yaml"),
     "opts": ["MODEL.TIMMNETS.PRETRAINED", False]},
    {"name": "R_50_FPN_s1x", "kind": "detectron2", "config": str(D2 / "densepose_rcnn_R_50_FPN_s1x.yaml"),
     "opts": ALL_ROIS},
    {"name": "R_50_FPN_s1x_legacy", "kind": "detectron2",
     "config": str(D2 / "densepose_rcnn_R_50_FPN_s1x_legacy.yaml"), "opts": ALL_ROIS},
    {"name": "R_50_FPN_DL_s1x", "kind": "detectron2", "config": str(D2 / "densepose_rcnn_R_50_FPN_DL_s1x.yaml"),
     "opts": ALL_ROIS},
]
LOSS_TERMS = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_densepose_S", "loss_densepose_I",
              "loss_densepose_U", "loss_densepose_V"}


def _coarse_masks(rng):
    """dp_masks for an annotation that has none: an elliptic body cut into the 14 coarse parts (RLE)."""
    yy, xx = np.mgrid[0:256, 0:256]
    body = ((xx - 128) / 110.0) ** 2 + ((yy - 128) / 124.0) ** 2 <= 1
    labels = np.where(body, (yy * 7 // 256) * 2 + (xx >= 128 + rng.integers(-20, 20)) + 1, 0)
    masks = []
    for c in range(1, 15):
        m = np.asfortranarray((labels == c).astype(np.uint8))
        rle = mask_utils.encode(m)
        masks.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")} if m.any() else [])
    return masks


def _real_annotation(rng, box):
    with open(DEMO / "demo_dp_single_ann.pkl", "rb") as f:
        real = pickle.load(f, encoding="latin1")
    h, w = np.asarray(real["ICrop"]).shape[:2]
    return {"bbox": box, "category_id": 1, "iscrowd": 0,
            "dp_x": [float(x) * 256.0 / w for x in np.ravel(real["x"])],
            "dp_y": [float(y) * 256.0 / h for y in np.ravel(real["y"])],
            "dp_I": [float(i) for i in np.ravel(real["I"])],
            "dp_U": [float(u) for u in np.ravel(real["U"])],
            "dp_V": [float(v) for v in np.ravel(real["V"])],
            "dp_masks": _coarse_masks(rng)}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("loss_scenes")
    rng = np.random.default_rng(5)
    synthetic, anns, _ = render_synthetic_image(np.random.default_rng(11), min_size=288, max_size=320)
    cv2.imwrite(str(d / "synthetic.png"), synthetic)
    anns = [a for a in anns if a["bbox"][2] >= 8 and a["bbox"][3] >= 8]
    assert sum("dp_x" in a for a in anns) >= 1
    demo_im = cv2.imread(str(DEMO / "demo_im.jpg"))  # at half size (300 x 558): the CI budget
    cv2.imwrite(str(d / "demo_im_half.png"), cv2.resize(demo_im, (558, 300), interpolation=cv2.INTER_AREA))
    demo = {"image": str(d / "demo_im_half.png"),
            "annotations": [_real_annotation(rng, [236.5, 21.5, 170.5, 177.5]),
                            {"bbox": [30.25, 60.5, 90.0, 200.0], "category_id": 1, "iscrowd": 0}]}
    synthetic = {"image": str(d / "synthetic.png"), "annotations": anns}
    no_mask = json.loads(json.dumps(synthetic))
    next(a for a in no_mask["annotations"] if "dp_x" in a).pop("dp_masks")
    full, no_mask = [demo, synthetic], [no_mask]
    return d, [full, no_mask]


@pytest.fixture(scope="module")
def reference(peer_python, scenes):
    d, scene_list = scenes
    spec = {"models": MODELS, "scenes": scene_list, "seed": SEED, "sample_seed": SAMPLE_SEED}
    (d / "spec.json").write_text(json.dumps(spec))
    run_peer("losses_reference.py", d / "spec.json", d, python=peer_python, timeout=1200)
    return d


def _batch(scene):
    inputs = []
    for item in scene:
        im = cv2.imread(item["image"])
        h, w = im.shape[:2]
        xywh = torch.tensor([a["bbox"] for a in item["annotations"]], dtype=torch.float32).reshape(-1, 4)
        inst = Instances((h, w))
        inst.gt_boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        inst.gt_classes = torch.zeros(len(xywh), dtype=torch.long)
        inst.gt_densepose = DensePoseList([DensePoseDataRelative.from_annotation(a) if "dp_x" in a else None
                                           for a in item["annotations"]])
        inputs.append({"image": torch.as_tensor(im.transpose(2, 0, 1).copy()), "instances": inst,
                       "height": h, "width": w})
    return inputs


def _losses(model, inputs):
    torch.manual_seed(SAMPLE_SEED)
    return model(inputs)


def _assert_losses_equal(ours, ref, what):
    assert set(ours) == set(ref) == LOSS_TERMS, (what, sorted(ours), sorted(ref))
    bad = {k: (float(ours[k].detach()), ref[k]) for k in ref if not abs(float(ours[k].detach()) - ref[k]) <= 1e-6 + 1e-5 * abs(ref[k])}
    assert not bad, f"{what}: loss terms differ (ours, detectron2): {bad}"


@pytest.mark.parametrize("model_spec", MODELS, ids=[m["name"] for m in MODELS])
def test_same_weights_same_batch_same_losses_gradients_and_optimizer(reference, scenes, model_spec):
    _, scene_list = scenes
    ref = torch.load(reference / f"{model_spec['name']}_losses.pth", weights_only=False)
    assert ref["calibrated_layers"] > 0
    weights = str(reference / f"{model_spec['name']}.pth")
    cfg = load_config(model_spec["config"], model_spec["opts"] + ["MODEL.WEIGHTS", weights])
    for s, scene in enumerate(scene_list):
        want = ref["scenes"][s]
        model = build_model(cfg)
        DensePoseCheckpointer(model).load(weights)  # strict: every weight from the peer's file
        model.train()
        if s == 0:  # the same optimizer: lr, weight decay, momentum, nesterov of every parameter
            names = {id(p): k for k, p in model.named_parameters()}
            ours = {names[id(p)]: [g["lr"], g["weight_decay"], g["momentum"], g["nesterov"]]
                    for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
            assert ours == ref["optimizer"], {k: (ours.get(k), v) for k, v in ref["optimizer"].items()
                                              if ours.get(k) != v}
        loss_dict = _losses(model, _batch(scene))
        _assert_losses_equal(loss_dict, want["losses"], f"scene {s}")
        # the scene is not degenerate: every term is live, except the coarse term when a mask is missing
        zero = {k for k, v in want["losses"].items() if v == 0.0}
        assert zero == (set() if s == 0 else {"loss_densepose_S"}), (s, zero)

        sum(loss_dict.values()).backward()
        grads = {k: p.grad.double() for k, p in model.named_parameters() if p.grad is not None}
        # the same parameters are trained (frozen ones alike); the authors' backbone keeps its last 1x1 conv in
        # the graph with an exactly-zero gradient where ours leaves it out (its output is no feature map)
        only_ref = {k for k in set(want["grad_norms"]) - set(grads) if want["grad_norms"][k] != 0.0}
        assert not only_ref and set(grads) <= set(want["grad_norms"]), (sorted(only_ref),
                                                                       sorted(set(grads) - set(want["grad_norms"])))
        # gradients agree in aggregate, not to float rounding: activations agree to ~1e-5, and a ReLU whose
        # input is within that of zero passes its gradient on one side only (measured: such flips alone make
        # some conv weight gradients differ by ~1e-3 of their largest entry)
        drift = sum(abs(float(g.norm()) - want["grad_norms"][k]) for k, g in grads.items()) / sum(
            want["grad_norms"].values())
        assert drift <= 5e-3, f"scene {s}: gradient norms differ by {drift:.2e} in total"
        if s == 0 and "grads" in ref:
            a = torch.cat([grads[k].flatten() for k in grads])
            b = torch.cat([ref["grads"][k].double().flatten() for k in grads])
            cosine, rel = float(a @ b / (a.norm() * b.norm())), float((a - b).norm() / b.norm())
            assert cosine >= 0.9999 and rel <= 2e-2, (cosine, rel)
