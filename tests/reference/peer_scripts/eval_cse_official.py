"""Peer side of test_reference_cse_evaluation.py: score CSE results with the OFFICIAL DensePoseCocoEval
(detectron2 projects/DensePose, iouType "densepose", CSE path: computeOgps_single_pair_cse).

    eval_cse_official.py GT.json RESULTS.pt EVAL_DATA_DIR MESH_DIR MESH_NAMES OUT.json

RESULTS.pt (torch.save): {"results": [{image_id, category_id, bbox, score, coarse_segm (C,S,S), embedding
(D,S,S)}], "vertex_embeddings": {mesh name: (V, D)}} -- the dicts detectron2's
``densepose_cse_predictions_to_dict`` makes. Each name of MESH_NAMES (comma-separated) is registered in
detectron2's MeshCatalog with its files under MESH_DIR (detectron2's layout); the embedder is a callable
returning the given vertex embeddings, as the evaluator calls ``self.embedder(mesh_name)``. The official
``_loadGEval`` (run for every "densepose" evaluation) reads the chart files through a PathManager shim
mapping their URLs into EVAL_DATA_DIR. ``findClosestVertsCse`` moves pixel embeddings to "cuda": on this
CPU-only machine tensors asked to go to "cuda" stay on the CPU (the same arithmetic).

OUT.json: {"GPS"|"GPSM"|"IOU": {"metrics": [names], "stats": [floats], "gps": {"<img>": [[...]]}}}.
"""
import contextlib
import io
import json
import logging
import os
import sys

import numpy as np
import torch
from pycocotools.coco import COCO

import densepose.evaluation.densepose_coco_evaluation as dce
from densepose.data.meshes.catalog import MeshInfo, register_mesh
from densepose.evaluation.densepose_coco_evaluation import DensePoseCocoEval, DensePoseEvalMode
from densepose.evaluation.evaluator import _get_densepose_metrics

OFFICIAL_FILES = ("SMPL_subdiv.mat", "SMPL_SUBDIV_TRANSFORM.mat", "Pdist_matrix.pkl")


class LocalPathManager:
    def __init__(self, eval_dir):
        self.eval_dir = eval_dir

    def get_local_path(self, path, **kwargs):
        name = path.rsplit("/", 1)[-1]
        if name not in OFFICIAL_FILES:
            raise AssertionError(f"unexpected data file requested by the evaluator: {path}")
        return os.path.join(self.eval_dir, name)


def _cpu_for_cuda():
    to = torch.Tensor.to

    def to_cpu_for_cuda(self, *args, **kwargs):
        if kwargs.get("device") == "cuda":
            kwargs["device"] = "cpu"
        args = tuple("cpu" if a == "cuda" else a for a in args)
        return to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu_for_cuda


def main(gt_path, results_path, eval_dir, mesh_dir, mesh_names, out_path):
    logging.basicConfig(level=logging.WARNING)
    dce.PathManager = LocalPathManager(eval_dir)
    _cpu_for_cuda()
    for name in mesh_names.split(","):
        register_mesh(MeshInfo(name=name, data=f"{name}.pkl", geodists=f"geodists/geodists_{name}.pkl",
                               symmetry=f"symmetry/symmetry_{name}.pkl", texcoords=f"texcoords/texcoords_{name}.pkl"),
                      mesh_dir)
    saved = torch.load(results_path)
    vertex_embeddings = saved["vertex_embeddings"]

    def embedder(mesh_name):
        return vertex_embeddings[mesh_name]

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        coco_dt = coco_gt.loadRes(saved["results"])
    out = {}
    metrics = _get_densepose_metrics(0.5)
    for mode_name in ("GPS", "GPSM", "IOU"):
        ev = DensePoseCocoEval(coco_gt, coco_dt, "densepose", embedder=embedder,
                               dpEvalMode=getattr(DensePoseEvalMode, mode_name))
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        gps = {str(img): np.asarray(v[0]).tolist() for (img, _), v in ev.ious.items() if len(v) > 0}
        out[mode_name] = {"metrics": metrics, "stats": [float(s) for s in np.asarray(ev.stats)], "gps": gps}
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
