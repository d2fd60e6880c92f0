"""Peer side of test_reference_cse_losses (reference venv): detectron2's DensePoseCseLoss on given inputs.

usage: cse_losses_reference.py INPUTS.pth OUT.pth
INPUTS (torch.save): {"mesh_dir": dir with the meshes' files in detectron2's layout, "meshes": {name: num
  vertices}, "embed_size": D, "embedders": {name: (V, D) embeddings table}, "cases": [{"opts": [KEY, VALUE, ...],
  "scenes": [{"images": [{"image_size": (h, w), "proposal_boxes": (n, 4) XYXY, "gt_boxes": (n, 4) XYXY,
  "annotations": [annotation dict (dp_x, dp_y, dp_vertex, ref_model, optional dp_masks) or None]}],
  "embedding": (N, D, S, S), "coarse_segm": (N, C, S, S)}]}]}.
Per case and scene: the config (detectron2 defaults + DensePose + a vertex_direct embedder per mesh + opts), the
Embedder loaded with the given tables, the loss dict of DensePoseCseLoss(cfg)(proposals, outputs, embedder=...),
and the gradients of its sum w.r.t. the embedding, the coarse segmentation and every embedder table.
OUT: {"cases": [[{"losses": {name: float}, "grads": {"embedding", "coarse_segm", "embedder.<name>": tensor}}]]}.
"""
import sys

import torch

from peer_models import make_cfg  # noqa: F401  (sets up the peer's import path)

from densepose import add_densepose_config
from densepose.data.meshes.catalog import MeshInfo, register_mesh
from densepose.modeling.cse.embedder import Embedder
from densepose.modeling.losses.cse import DensePoseCseLoss
from densepose.structures import DensePoseDataRelative, DensePoseEmbeddingPredictorOutput, DensePoseList
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

inputs = torch.load(sys.argv[1], weights_only=False)
for name in inputs["meshes"]:
    register_mesh(MeshInfo(name=name, data=f"{name}.pkl", geodists=f"geodists/geodists_{name}.pkl",
                           symmetry=f"symmetry/symmetry_{name}.pkl", texcoords=f"texcoords/texcoords_{name}.pkl"),
                  inputs["mesh_dir"])


def config(opts):
    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBED_SIZE = inputs["embed_size"]
    for name, v in inputs["meshes"].items():
        cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS[name] = type(cfg)(
            {"TYPE": "vertex_direct", "NUM_VERTICES": v, "IS_TRAINABLE": True, "INIT_FILE": ""})
    cfg.merge_from_list(opts)
    return cfg


def proposals(images):
    out = []
    for im in images:
        inst = Instances(tuple(im["image_size"]))
        inst.proposal_boxes = Boxes(im["proposal_boxes"].float())
        inst.gt_boxes = Boxes(im["gt_boxes"].float())
        inst.gt_classes = torch.zeros(len(im["gt_boxes"]), dtype=torch.long)
        dps = [None if a is None else DensePoseDataRelative(dict(a)) for a in im["annotations"]]
        inst.gt_densepose = DensePoseList(dps, inst.gt_boxes, inst.image_size)
        out.append(inst)
    return out


results = []
for case in inputs["cases"]:
    cfg = config(case["opts"])
    loss = DensePoseCseLoss(cfg)
    case_results = []
    for scene in case["scenes"]:
        embedder = Embedder(cfg)
        with torch.no_grad():
            for name, table in inputs["embedders"].items():
                getattr(embedder, f"embedder_{name}").embeddings.copy_(table)
        embedding = scene["embedding"].clone().requires_grad_(True)
        coarse_segm = scene["coarse_segm"].clone().requires_grad_(True)
        outputs = DensePoseEmbeddingPredictorOutput(embedding=embedding, coarse_segm=coarse_segm)
        losses = loss(proposals(scene["images"]), outputs, embedder=embedder)
        sum(losses.values()).backward()
        grads = {"embedding": embedding.grad, "coarse_segm": coarse_segm.grad}
        for name in inputs["embedders"]:
            g = getattr(embedder, f"embedder_{name}").embeddings.grad
            grads[f"embedder.{name}"] = torch.zeros_like(inputs["embedders"][name]) if g is None else g
        case_results.append({"losses": {k: float(v) for k, v in losses.items()}, "grads": grads})
        print(case["opts"], {k: round(float(v), 5) for k, v in losses.items()}, flush=True)
    results.append(case_results)
torch.save({"cases": results}, sys.argv[2])
