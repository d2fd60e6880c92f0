#!/usr/bin/env python3
"""Peak memory of the DensePose evaluation with a full-size distance table.

    benchmark_eval_memory.py [--work-dir DIR] [--images 100] [--fresh-cache]

Builds once (cached in --work-dir, default $DENSEPOSE_FNL_CACHE/benchmark_eval or
~/.cache/densepose_fnl/benchmark_eval; never in git) synthetic eval data in the official formats with a
full-size table -- 27,554 vertices, 379,597,681 condensed float32 distances (~1.5 GB pickle), 29,408
subdivided points -- plus a synthetic COCO-DensePose ground truth and a challenge-format results file for
--images images. Then evaluates it (box AP + GPS / GPSm / IOU) in a fresh process and prints that
process's peak RSS: first with the one-off pickle -> .npy conversion if the cache is absent (forced by
--fresh-cache), then a warm run.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_VERTICES = 27554
N_SUBDIV = 29408


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_eval_data(out: Path, seed: int = 0) -> None:
    from densepose_fnl.evaluation.synthetic_mesh import write_pdist_pickle, write_subdiv_files

    if all((out / f).is_file() for f in ("SMPL_subdiv.mat", "SMPL_SUBDIV_TRANSFORM.mat", "Pdist_matrix.pkl")):
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    # every vertex on one chart; 1,854 seam vertices appear once more on a second chart
    part = np.arange(N_VERTICES) % 24 + 1
    extra = rng.choice(N_VERTICES, N_SUBDIV - N_VERTICES, replace=False)
    sub_vertex = np.concatenate([np.arange(N_VERTICES), extra])
    sub_part = np.concatenate([part, (part[extra] % 24) + 1])
    sub_uv = rng.uniform(0, 1, (N_SUBDIV, 2))
    write_subdiv_files(out, sub_uv, sub_part, sub_vertex)
    # vertex positions on a body-sized box; distances: Euclidean (a stand-in; only the size matters here)
    xyz = rng.uniform(0, 1, (N_VERTICES, 3)) * np.array([0.4, 0.3, 1.7])
    count = N_VERTICES * (N_VERTICES - 1) // 2

    def rows():
        block = []
        size = 0
        for b in range(1, N_VERTICES):
            block.append(np.sqrt(((xyz[:b] - xyz[b]) ** 2).sum(1)).astype(np.float32))
            size += b
            if size > 1 << 24:
                yield np.concatenate(block)
                block, size = [], 0
        if block:
            yield np.concatenate(block)

    t = time.time()
    write_pdist_pickle(out / "Pdist_matrix.pkl.tmp", count, rows())
    os.replace(out / "Pdist_matrix.pkl.tmp", out / "Pdist_matrix.pkl")
    print(f"built {out / 'Pdist_matrix.pkl'} ({count} distances) in {time.time() - t:.0f} s", flush=True)


def build_dataset(work: Path, n_images: int, seed: int = 0):
    from densepose_fnl.evaluation.results_format import encode_iuv
    from densepose_fnl.evaluation.synthetic_mesh import coco_dataset, densepose_annotation

    gt_path, res_path = work / f"gt_{n_images}.json", work / f"results_{n_images}.json"
    if gt_path.is_file() and res_path.is_file():
        return gt_path, res_path
    rng = np.random.RandomState(seed)
    images, anns, results = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": 640, "height": 480, "file_name": f"{img_id:06d}.jpg"})
        for p in range(3):
            w, h = rng.randint(60, 200), rng.randint(120, 400)
            x, y = rng.randint(0, 640 - w), rng.randint(0, 480 - h)
            n = rng.randint(50, 130)
            pts = np.stack([rng.uniform(0, 255, n), rng.uniform(0, 255, n), rng.randint(1, 25, n),
                            rng.uniform(0, 1, n), rng.uniform(0, 1, n)], 1)
            anns.append(densepose_annotation(len(anns) + 1, img_id, [x, y, w, h], pts if p < 2 else None))
            for d in range(2):  # two detections per person, jittered
                bx = [x + rng.uniform(-8, 8), y + rng.uniform(-8, 8), w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
                bx = [round(float(v), 1) for v in bx]
                bw, bh = int(bx[2]), int(bx[3])
                iuv = np.zeros((3, bh, bw), dtype=np.uint8)
                iuv[0] = (np.arange(bh)[:, None] * 24 // bh + 1) * (rng.uniform(size=(bh, bw)) < 0.9)
                iuv[1] = np.linspace(0, 255, bw).astype(np.uint8)[None, :] * (iuv[0] > 0)
                iuv[2] = np.linspace(0, 255, bh).astype(np.uint8)[:, None] * (iuv[0] > 0)
                results.append({"image_id": img_id, "category_id": 1, "bbox": bx,
                                "score": float(rng.uniform(0.3, 1.0)), **encode_iuv(iuv)})
    gt_path.write_text(json.dumps(coco_dataset(images, anns)))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path


def child(args) -> int:
    import logging

    from densepose_fnl.evaluation import GeodesicEvalData, evaluate_boxes, evaluate_densepose, load_coco

    logging.basicConfig(level=logging.WARNING)
    t = time.time()
    coco = load_coco(args.gt)
    preds = json.loads(Path(args.results).read_text())
    geo = GeodesicEvalData(args.eval_data)
    t_load = time.time() - t
    res = {"bbox": evaluate_boxes(coco, preds, print_fn=lambda s: None)}
    res.update(evaluate_densepose(coco, preds, geo, print_fn=lambda s: None))
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "load_s": t_load, "total_s": time.time() - t,
                      "detections": len(preds), "AP_gps": res["densepose_gps"]["AP"]}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(os.environ.get("DENSEPOSE_FNL_CACHE", Path.home() / ".cache" / "densepose_fnl")) / "benchmark_eval"
    ap.add_argument("--work-dir", type=Path, default=default)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--fresh-cache", action="store_true", help="delete the .npy cache first (measure the conversion)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gt", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--eval-data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    work = args.work_dir
    eval_dir = work / "eval_data"
    build_eval_data(eval_dir)
    gt, res = build_dataset(work, args.images)
    if args.fresh_cache:
        for f in eval_dir.glob("Pdist_matrix.npy*"):
            f.unlink()
    runs = ["conversion + evaluation" if not (eval_dir / "Pdist_matrix.npy").is_file() else "evaluation", "evaluation (warm)"]
    for name in runs:
        cmd = [sys.executable, __file__, "--child", "--gt", str(gt), "--results", str(res), "--eval-data", str(eval_dir)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        stats = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:>24s}: peak RSS {stats['peak_rss_mb']:.0f} MB, {stats['total_s']:.1f} s "
              f"(load {stats['load_s']:.1f} s), {stats['detections']} detections on {args.images} images, "
              f"GPS AP {stats['AP_gps']:.2f}", flush=True)
    print(f"builder process peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
