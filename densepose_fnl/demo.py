"""The pictures and the summary of `scripts/demo.sh` (`tools/demo_report.py` calls `write_demo_report`).

After training (OUTPUT_DIR with metrics.json, model_final.pth, its evaluation) and the int8 ONNX export,
`write_demo_report` writes under `<output>/vis/`:

* `compare.NNNN.png`: per validation image, the ground truth (the dense maps of the synthetic generator,
  rendered again from the set's manifest) beside the PyTorch prediction: fine parts as colours, U and V
  iso-lines, boxes; shortest side >= 512 px per panel;
* `pytorch_vs_int8.png`: ground truth | PyTorch | int8 ONNX Runtime on the same images;
* `learning_curve.png`: losses and validation AP vs iteration (metrics.json);
* `pred_clip.mp4`: the int8 ONNX model's predictions over a clip of validation images, and its FPS on
  this machine (model time per frame: pre-processing, ONNX Runtime, post-processing; drawing excluded);
* `readme_figure.png`: a small (palette PNG) version of one comparison, for the README;
* `summary.json`: the paths, the evaluation results and the FPS.
"""
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["extract_chart_results", "write_demo_report", "palette_png", "format_summary"]


def extract_chart_results(instances, min_score: float = 0.0):
    """Instances of a predictor -> (boxes (N, 4), scores (N,) as numpy, N DensePoseChartResult) with
    score >= min_score (`postprocess.dump.extract_results`, as apply_net)."""
    from .postprocess.dump import extract_results

    boxes, scores, results = extract_results(instances, min_score)
    return boxes.numpy(), scores.numpy(), results


def palette_png(image_bgr: np.ndarray, path: str, max_width: int = 720, colors: int = 96) -> int:
    """Write a small PNG of `image_bgr` (downscaled to `max_width`, `colors`-colour palette); returns its
    size in bytes."""
    from PIL import Image

    if image_bgr.shape[1] > max_width:
        s = max_width / image_bgr.shape[1]
        image_bgr = cv2.resize(image_bgr, (max_width, int(round(image_bgr.shape[0] * s))), interpolation=cv2.INTER_AREA)
    pil = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    pil.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return os.path.getsize(path)


def _load_results(path: Optional[str]) -> Dict[str, Any]:
    if not path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        res = json.load(f)
    # {dataset: {task: {metric: value}}} -> the single dataset's tasks
    return next(iter(res.values())) if len(res) == 1 and isinstance(next(iter(res.values())), dict) else res


def _ap_line(tasks: Dict[str, Any]) -> str:
    names = (("bbox", "box AP"), ("densepose_gps", "GPS AP"), ("densepose_gpsm", "GPSm AP"),
             ("densepose_segm", "IOU AP"))  # fmt: skip
    parts = [f"{label} {tasks[key]['AP']:.1f}" for key, label in names if key in tasks and "AP" in tasks[key]]
    return ", ".join(parts) if parts else "(no evaluation found)"


_TASKS = ("bbox", "densepose_gps", "densepose_gpsm", "densepose_segm")


def _tasks_from_metrics(rows: Sequence[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """The last evaluation in metrics.json rows ({"bbox/AP": ..}) as {task: {metric: value}}."""
    for row in reversed(rows):
        tasks: Dict[str, Dict[str, float]] = {}
        for key, value in row.items():
            if key.count("/") == 1 and key.split("/")[0] in _TASKS:
                task, metric = key.split("/")
                tasks.setdefault(task, {})[metric] = float(value)
        if tasks:
            return tasks
    return {}


def _ground_truth(dataset_root: str, image_id: int):
    from .data.synthetic import render_split_image
    from .vis.compare import dense_chart_results

    _, _, dense = render_split_image(dataset_root, "val", image_id)
    return dense_chart_results(dense["I"], dense["U"], dense["V"], dense["owner"])


def write_demo_report(
    config_file: str,
    weights: str,
    dataset_root: str,
    output_dir: str,
    onnx_config: Optional[str] = None,
    onnx_model: Optional[str] = None,
    eval_results: Optional[str] = None,
    onnx_eval_results: Optional[str] = None,
    metrics: Optional[str] = None,
    image_ids: Sequence[int] = (1, 2, 3, 4, 5, 6),
    int8_image_ids: Sequence[int] = (1, 2),
    video_frames: int = 30,
    min_score: float = 0.5,
    min_side: int = 512,
    readme_figure: Optional[str] = None,
    opts: Sequence[str] = (),
) -> Dict[str, Any]:
    """Write the demo pictures, video and summary (see the module docstring) into `output_dir`; returns
    the summary dict. `onnx_*` optional (no int8 picture / video without them)."""
    from .config import load_config
    from .data.synthetic import synthetic_split_paths
    from .engine.predictor import DefaultPredictor
    from .vis.compare import chart_panel, compare_grid, fit_frame, side_by_side, stack_rows
    from .vis.learning_curve import ap_table, plot_learning_curve, read_metrics

    os.makedirs(output_dir, exist_ok=True)
    img_dir, ann_file = synthetic_split_paths(dataset_root, "val")
    with open(ann_file) as f:
        files = {im["id"]: os.path.join(img_dir, im["file_name"]) for im in json.load(f)["images"]}
    cfg = load_config(config_file, ["MODEL.WEIGHTS", weights, *opts])
    torch_pred = DefaultPredictor(cfg)
    ort_pred = None
    if onnx_model:
        from .export.ort_model import open_ort_predictor

        ort_cfg = load_config(onnx_config or config_file, ["MODEL.WEIGHTS", onnx_model])
        ort_pred = open_ort_predictor(onnx_model, ort_cfg)
    summary: Dict[str, Any] = {"output_dir": output_dir, "pictures": [], "min_score": min_score}

    def predict(pred, image):
        t = time.perf_counter()
        with torch.no_grad():
            instances = pred(image)["instances"]
        return extract_chart_results(instances, min_score), time.perf_counter() - t

    # 1. ground truth | PyTorch, one picture per image (parts on top, U / V iso-lines below)
    cache: Dict[int, Tuple[np.ndarray, Any, Any]] = {}
    for n, image_id in enumerate(image_ids, start=1):
        image = cv2.imread(files[image_id])
        gt = _ground_truth(dataset_root, image_id)
        (boxes, scores, results), _ = predict(torch_pred, image)
        cache[image_id] = (image, gt, (boxes, results, scores))
        path = os.path.join(output_dir, f"compare.{n:04d}.png")
        cv2.imwrite(path, compare_grid(image, [(f"ground truth (val image {image_id})", gt[0], gt[1], None),
                                               (f"PyTorch ({len(results)} people)", boxes, results, scores)], min_side))
        summary["pictures"].append(path)

    # 2. learning curve
    if metrics and os.path.isfile(metrics):
        path = os.path.join(output_dir, "learning_curve.png")
        plot_learning_curve(metrics, path, title="Mobile Parsing R-CNN B from random init, synthetic DensePose")
        summary["learning_curve"] = path
        summary["ap_vs_iteration"] = ap_table(read_metrics(metrics))
    summary["eval"] = _load_results(eval_results) or (
        _tasks_from_metrics(read_metrics(metrics)) if metrics and os.path.isfile(metrics) else {})

    # 3. int8 ONNX beside PyTorch, and the video with the int8 model's FPS
    first_row = None
    if ort_pred is not None:
        pictures = []
        for image_id in int8_image_ids:
            if image_id not in cache:
                image = cv2.imread(files[image_id])
                (b, s, r), _ = predict(torch_pred, image)
                cache[image_id] = (image, _ground_truth(dataset_root, image_id), (b, r, s))
            image, gt, (b, r, s) = cache[image_id]
            (qb, qs, qr), _ = predict(ort_pred, image)
            cols = [(f"ground truth (val image {image_id})", gt[0], gt[1], None),
                    (f"PyTorch ({len(r)} people)", b, r, s), (f"int8 ONNX Runtime ({len(qr)} people)", qb, qr, qs)]
            pictures.append(compare_grid(image, cols, min_side))
            if first_row is None:
                first_row = side_by_side([chart_panel(image, bb, rr, ss, t, min_side) for t, bb, rr, ss in cols])
        path = os.path.join(output_dir, "pytorch_vs_int8.png")
        cv2.imwrite(path, stack_rows(pictures, gap=14))
        summary["pytorch_vs_int8"] = path
        summary["eval_int8"] = _load_results(onnx_eval_results)

        ids = sorted(files)[:video_frames]
        predict(ort_pred, cv2.imread(files[ids[0]]))  # warm-up, not timed
        times, side = [], 384
        path = os.path.join(output_dir, "pred_clip.mp4")
        writer = None
        for image_id in ids:
            image = cv2.imread(files[image_id])
            (b, s, r), dt = predict(ort_pred, image)
            times.append(dt)
            gt = chart_panel(image, *_ground_truth(dataset_root, image_id), None, "ground truth", side)
            q = chart_panel(image, b, r, s, f"int8 ONNX Runtime, {1000.0 * dt:.0f} ms", side)
            frame = side_by_side([fit_frame(gt, 640, 512), fit_frame(q, 640, 512)], background=(0, 0, 0))
            if writer is None:
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 3, (frame.shape[1], frame.shape[0]))
            writer.write(frame)
        writer.release()
        summary["video"] = path
        summary["video_frames"] = len(ids)
        summary["int8_fps"] = len(times) / sum(times)
        summary["int8_ms_per_image"] = 1000.0 * sum(times) / len(times)
        summary["threads"] = torch.get_num_threads()

    # 4. the README figure: parts of ground truth | PyTorch (| int8 ONNX) on the first image, small
    if readme_figure:
        if first_row is None:
            image, gt, (b, r, s) = cache[image_ids[0]]
            first_row = side_by_side([chart_panel(image, gt[0], gt[1], None, "ground truth", min_side),
                                      chart_panel(image, b, r, s, "PyTorch", min_side)])
        summary["readme_figure"] = readme_figure
        summary["readme_figure_bytes"] = palette_png(first_row, readme_figure)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    return summary


def format_summary(summary: Dict[str, Any]) -> str:
    """The demo's closing lines: where the pictures are, the AP reached and the int8 FPS."""
    lines = []
    if summary.get("eval"):
        lines.append(f"PyTorch model on densepose_synthetic_val: {_ap_line(summary['eval'])}")
    if summary.get("eval_int8"):
        lines.append(f"int8 ONNX model on densepose_synthetic_val: {_ap_line(summary['eval_int8'])}")
    for row in summary.get("ap_vs_iteration", []):
        aps = ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "iteration")
        lines.append(f"  after {row['iteration']:4d} iterations: {aps}")
    lines.append("pictures (ground truth | PyTorch prediction): " + " ".join(summary.get("pictures", [])))
    for key, label in (("pytorch_vs_int8", "ground truth | PyTorch | int8 ONNX"), ("learning_curve", "learning curve"),
                       ("video", "video (ground truth | int8 ONNX)"), ("readme_figure", "README figure")):
        if key in summary:
            lines.append(f"{label}: {summary[key]}")
    if "int8_fps" in summary:
        lines.append(f"int8 ONNX Runtime on this machine: {summary['int8_fps']:.1f} FPS "
                     f"({summary['int8_ms_per_image']:.0f} ms per image, {summary['threads']} threads, "
                     f"{summary['video_frames']} validation images)")
    return "\n".join(lines)
