"""Peer side of test_reference_cse (reference venv: detectron2 + DensePose + DensePoseFnL): continuous surface
embedding (CSE) models in the official code.

usage: cse_reference.py forward SPEC.json OUT_DIR

forward: SPEC {"models": [{"name", "kind": "authors"|"detectron2", "config", "opts"}], "images": [paths],
  "min_sizes": [...], "calib_image": path, "seed": int}. Per model: random init (torch seed); every mesh
  embedder's `features` buffer (zeros without INIT_FILE) and `embeddings` projection (zeros at init) drawn
  from a seeded normal distribution, so that the vertex embeddings are not trivial; BN statistics calibrated
  on `calib_image` (peer_models.calibrate); state dict saved as OUT_DIR/<name>.pth ({"model": ...}, the
  features buffer included); DefaultPredictor on every image at every MIN_SIZE_TEST. OUT_DIR/<name>_outputs.pth
  holds the predictor / output class names, the vertex embeddings of every mesh (`roi_heads.embedder(mesh)`)
  and per image: boxes, scores, classes, embedding, coarse_segm.
"""
import json
import os
import sys

import cv2
import torch

from peer_models import calibrate, make_cfg  # noqa: E402  (this folder: shared by the peer scripts)


def randomize_embedders(embedder, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sorted(embedder.mesh_names):
            e = getattr(embedder, f"embedder_{name}")
            for tensor in (getattr(e, "features", None), e.embeddings):
                if tensor is not None:
                    tensor.copy_(torch.randn(tensor.shape, generator=g))


def forward(spec, out_dir):
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model

    images = {p: cv2.imread(p) for p in spec["images"]}
    calib = cv2.imread(spec["calib_image"])
    for m in spec["models"]:
        torch.manual_seed(spec["seed"])
        cfg = make_cfg(m)
        model = build_model(cfg).eval()
        randomize_embedders(model.roi_heads.embedder, spec["seed"])
        n = calibrate(model, calib)
        torch.save({"model": model.state_dict()}, os.path.join(out_dir, f"{m['name']}.pth"))
        embedder = model.roi_heads.embedder
        with torch.no_grad():
            vertex_embeddings = {name: embedder(name) for name in sorted(embedder.mesh_names)}
        results = {"calibrated_layers": n, "predictor_type": type(model.roi_heads.densepose_predictor).__name__,
                   "vertex_embeddings": vertex_embeddings}
        for min_size in spec["min_sizes"]:
            c = cfg.clone()
            c.defrost()
            c.INPUT.MIN_SIZE_TEST = min_size
            c.MODEL.WEIGHTS = ""  # also read by detectron2's Embedder at build time
            predictor = DefaultPredictor(c)
            predictor.model.load_state_dict(model.state_dict())
            for path, im in images.items():
                with torch.no_grad():
                    inst = predictor(im)["instances"]
                dp = inst.pred_densepose
                results[f"{os.path.basename(path)}@{min_size}"] = {
                    "boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes,
                    "output_type": type(dp).__name__, "embedding": dp.embedding, "coarse_segm": dp.coarse_segm}
        torch.save(results, os.path.join(out_dir, f"{m['name']}_outputs.pth"))
        print(m["name"], "calibrated", n, "layers", results["predictor_type"], flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "forward":
        forward(json.load(open(sys.argv[2])), sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
