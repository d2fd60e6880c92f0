#!/usr/bin/env python3
"""Peak memory of CSE evaluation with a full-size (27,554-vertex) geodesic table.

    benchmark_eval_memory_cse.py [--work-dir DIR] [--images 50]

Writes once (cached in --work-dir, default $DENSEPOSE_FNL_CACHE/benchmark_eval_cse) a synthetic mesh in
detectron2's formats whose geodists pickle is full size: 27,554^2 float32 (~3 GB, written streaming row
block by row block; Euclidean distances of random body-sized points stand in for geodesics, only the size
matters), then in a fresh process runs the dataset evaluator in CSE mode as a CSE model's evaluation does:
per image, model outputs (coarse_segm 2 x 112 x 112, embedding 16 x 112 x 112 per detection) are fed to
``process`` (which keeps only the vertices at the GT points and a mask RLE), then ``evaluate`` (box AP +
GPS / GPSm / IOU, geodesics read from the memory-light table; the first run also converts the pickle to
.npy). Prints that process's peak RSS.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_eval_memory import peak_rss_mb  # noqa: E402

N_VERTICES = 27554
MESH = "bench_body_27554"


def build_mesh(out: Path, seed: int = 0) -> None:
    import pickle

    from densepose_fnl.evaluation.synthetic_mesh import mesh_file_names, write_geodists_pickle

    files = {k: out / v for k, v in mesh_file_names(MESH).items()}
    if all(f.is_file() for f in files.values()):
        return
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    xyz = (rng.uniform(0, 1, (N_VERTICES, 3)) * np.array([0.4, 0.3, 1.7])).astype(np.float32)
    with open(files["data"], "wb") as f:
        pickle.dump({"vertices": xyz, "faces": np.zeros((1, 3), dtype=np.int64)}, f, protocol=4)
    with open(files["symmetry"], "wb") as f:
        pickle.dump({"vertex_transforms": np.arange(N_VERTICES, dtype=np.int64)}, f, protocol=4)
    with open(files["texcoords"], "wb") as f:
        pickle.dump(rng.uniform(0, 1, (N_VERTICES, 2)).astype(np.float32), f, protocol=4)

    def rows():
        for r in range(0, N_VERTICES, 512):
            yield np.sqrt(((xyz[r : r + 512, None, :] - xyz[None, :, :]) ** 2).sum(-1)).astype(np.float32)

    t = time.time()
    tmp = files["geodists"].with_name(files["geodists"].name + ".tmp")
    write_geodists_pickle(tmp, N_VERTICES, rows())
    os.replace(tmp, files["geodists"])
    print(f"built {files['geodists']} ({N_VERTICES}^2 float32) in {time.time() - t:.0f} s", flush=True)


def child(args) -> int:
    import logging

    import torch

    from densepose_fnl.data.meshes import MeshCatalog, MeshInfo
    from densepose_fnl.evaluation.evaluator import DensePoseCOCOEvaluator
    from densepose_fnl.evaluation.synthetic_mesh import coco_dataset, densepose_annotation, mesh_file_names
    from densepose_fnl.structures import Instances

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    MeshCatalog[MESH] = MeshInfo(MESH, **mesh_file_names(MESH), data_dir=args.mesh_dir)
    rng = np.random.RandomState(0)
    images, anns = [], []
    for img_id in range(1, args.images + 1):
        images.append({"id": img_id, "width": 640, "height": 480, "file_name": f"{img_id:06d}.jpg"})
        for p in range(3):
            w, h = rng.randint(60, 200), rng.randint(120, 400)
            x, y = rng.randint(0, 640 - w), rng.randint(0, 480 - h)
            n = rng.randint(50, 130)
            pts = np.stack([rng.uniform(0, 255, n), rng.uniform(0, 255, n), rng.randint(1, 25, n),
                            rng.uniform(0, 1, n), rng.uniform(0, 1, n)], 1)
            a = densepose_annotation(len(anns) + 1, img_id, [x, y, w, h], pts if p < 2 else None)
            if p < 2:
                a.update(dp_vertex=rng.randint(0, N_VERTICES, n).tolist(), ref_model=MESH)
            anns.append(a)
    gt = coco_dataset(images, anns)
    vert_emb = torch.randn(N_VERTICES, 16)

    class _Out:
        def __init__(self, segm, emb):
            self.coarse_segm, self.embedding = segm, emb

        def __len__(self):
            return len(self.coarse_segm)

        def to(self, device):
            return self

    t = time.time()
    ev = DensePoseCOCOEvaluator(gt, evaluator_type="cse", embedder=lambda name: vert_emb)
    for img_id in range(1, args.images + 1):
        people = [a for a in anns if a["image_id"] == img_id]
        boxes = []
        for a in people:
            for _ in range(2):
                x, y, w, h = a["bbox"]
                bx = [x + rng.uniform(-8, 8), y + rng.uniform(-8, 8), w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
                boxes.append([bx[0], bx[1], bx[0] + bx[2], bx[1] + bx[3]])
        inst = Instances((480, 640))
        inst.pred_boxes = torch.tensor(boxes, dtype=torch.float32)
        inst.scores = torch.rand(len(boxes))
        inst.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
        inst.pred_densepose = _Out(torch.randn(len(boxes), 2, 112, 112), torch.randn(len(boxes), 16, 112, 112))
        ev.process([{"image_id": img_id}], [{"instances": inst}])
    t_process = time.time() - t
    res = ev.evaluate()
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "process_s": t_process, "total_s": time.time() - t,
                      "detections": len(ev._predictions), "AP_gps": res["densepose_gps"]["AP"]}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("DENSEPOSE_FNL_CACHE", Path.home() / ".cache" / "densepose_fnl")) / "benchmark_eval_cse"
    ap.add_argument("--work-dir", type=Path, default=default)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mesh-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    mesh_dir = args.work_dir / "meshes"
    build_mesh(mesh_dir)
    cached = (mesh_dir / "geodists" / f"geodists_{MESH}.npy").is_file()
    for name in (["evaluation"] if cached else ["conversion + evaluation"]) + ["evaluation (warm)"]:
        cmd = [sys.executable, __file__, "--child", "--images", str(args.images), "--mesh-dir", str(mesh_dir)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:>24s}: peak RSS {stats['peak_rss_mb']:.0f} MB, {stats['total_s']:.1f} s "
              f"(process {stats['process_s']:.1f} s), {stats['detections']} detections on {args.images} images, "
              f"GPS AP {stats['AP_gps']:.2f}", flush=True)
    print(f"builder process peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
