"""Pictures that compare DensePose charts: ground truth beside predictions, PyTorch beside ONNX.

    from densepose_fnl.vis.compare import chart_panel, side_by_side, dense_chart_results
    gt_boxes, gt_results = dense_chart_results(I, U, V, owner)      # dense GT maps -> per-person charts
    left = chart_panel(image, gt_boxes, gt_results, title="ground truth", min_side=512)
    right = chart_panel(image, boxes, results, scores, title="prediction", min_side=512)
    cv2.imwrite("cmp.png", side_by_side([left, right]))

A panel draws the existing visualizers (`dp_parts,bbox` by default: the fine part index I in 24
distinct colours, then the boxes; `dp_contour` for the U and V iso-lines) on a copy of the image that
is first upscaled so its shortest side is at least `min_side` (charts are resized with it: labels
nearest, U / V bilinear, so the iso-lines stay one pixel wide at the output size), with a title strip
on top. `compare_grid` puts several chart sets of one image side by side (parts above, iso-lines below).
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..structures import DensePoseChartResult
from . import build_visualizer
from .base import as_numpy

TITLE_HEIGHT = 30
TITLE_BG = (40, 40, 40)
TITLE_FG = (240, 240, 240)


def part_palette_lut() -> np.ndarray:
    """An OpenCV user colormap (256, 1, 3) uint8 that gives each part index I = 1..24, drawn as
    `I * 255 / 24` by `FineSegmentationVisualizer`, its own clearly distinct colour (hues 7/24 of a turn
    apart, alternating brightness), so neighbouring parts never look alike."""
    import colorsys

    colors = np.zeros((25, 3), np.uint8)
    for k in range(1, 25):
        r, g, b = colorsys.hsv_to_rgb(((k * 7) % 24) / 24.0, 0.85 if k % 2 else 0.6, 1.0 if k % 2 else 0.75)
        colors[k] = (int(255 * b), int(255 * g), int(255 * r))
    values = np.arange(256, dtype=np.float64)
    index = np.clip(np.ceil(values / (255.0 / 24) - 1e-6), 0, 24).astype(np.int64)  # the visualizer truncates
    return colors[index].reshape(256, 1, 3)


def _parts_visualizer(alpha: float = 0.85):
    from .segmentation import FineSegmentationVisualizer

    return FineSegmentationVisualizer(alpha=alpha, cmap=part_palette_lut())


def dense_chart_results(
    labels: np.ndarray, u: np.ndarray, v: np.ndarray, owner: np.ndarray, min_area: int = 16
) -> Tuple[np.ndarray, List[DensePoseChartResult]]:
    """Per-pixel maps of a whole image (fine label 0..24, U, V in [0, 1], owner person index or -1) ->
    (boxes (N, 4) XYXY float32, N chart results over the boxes): one per owner with >= `min_area` pixels,
    its box tight around its visible pixels, the other pixels of the box background."""
    labels, owner = np.asarray(labels), np.asarray(owner)
    boxes, results = [], []
    for k in sorted(int(o) for o in np.unique(owner) if o >= 0):
        mine = owner == k
        if int(mine.sum()) < min_area:
            continue
        rows, cols = np.nonzero(mine.any(1))[0], np.nonzero(mine.any(0))[0]
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        sl = (slice(y0, y1), slice(x0, x1))
        lab = np.where(mine[sl], labels[sl], 0).astype(np.int64)
        uv = np.stack([np.asarray(u, np.float32)[sl], np.asarray(v, np.float32)[sl]]) * (lab > 0)[None]
        boxes.append([x0, y0, x1, y1])
        results.append(DensePoseChartResult(labels=torch.from_numpy(lab), uv=torch.from_numpy(uv.astype(np.float32))))
    return np.asarray(boxes, np.float32).reshape(-1, 4), results


def scale_chart_results(
    boxes_xyxy, results: Sequence[DensePoseChartResult], scale: float
) -> Tuple[np.ndarray, List[DensePoseChartResult]]:
    """Boxes and charts of an image resized by `scale`: boxes scaled, each chart resized to its new box
    size (labels nearest, U / V bilinear)."""
    boxes = as_numpy(boxes_xyxy).astype(np.float32).reshape(-1, 4)
    if scale == 1.0:
        return boxes, list(results)
    out = []
    scaled = boxes * scale
    for box, res in zip(scaled, results):
        h0, w0 = res.labels.shape
        x0, y0 = int(box[0]), int(box[1])
        w = max(1, int(round(w0 * scale)))
        h = max(1, int(round(h0 * scale)))
        lab = cv2.resize(as_numpy(res.labels).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        uv = as_numpy(res.uv).astype(np.float32)
        uv = np.stack([cv2.resize(uv[c], (w, h), interpolation=cv2.INTER_LINEAR) for c in range(2)])
        out.append(DensePoseChartResult(labels=torch.from_numpy(lab.astype(np.int64)), uv=torch.from_numpy(uv)))
        box[0], box[1] = x0, y0  # the chart is placed at the truncated corner (see vis.base.person_regions)
    return scaled, out


def add_title(panel: np.ndarray, title: str) -> np.ndarray:
    """The panel with a dark strip of `TITLE_HEIGHT` pixels on top holding `title`."""
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), TITLE_BG, np.uint8)
    scale = 0.6
    while scale > 0.3 and cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > panel.shape[1] - 10:
        scale -= 0.05
    cv2.putText(strip, title, (6, TITLE_HEIGHT - 10), cv2.FONT_HERSHEY_SIMPLEX, scale, TITLE_FG, 1, cv2.LINE_AA)
    return np.vstack([strip, panel])


def chart_panel(
    image_bgr: np.ndarray,
    boxes_xyxy,
    results: Sequence[DensePoseChartResult],
    scores=None,
    title: Optional[str] = None,
    min_side: int = 512,
    spec: str = "dp_parts,bbox",
    gray: bool = False,
) -> np.ndarray:
    """`image_bgr` upscaled so its shortest side is >= `min_side` (never downscaled; grey if `gray`), the
    charts drawn on it with the visualizers of `spec` (names of `vis.VISUALIZERS`, or `dp_parts`: the
    fine parts in the distinct colours of `part_palette_lut`), and a title strip if `title`."""
    scale = max(1.0, float(min_side) / float(min(image_bgr.shape[:2])))
    image = image_bgr
    if scale != 1.0:
        size = (int(round(image_bgr.shape[1] * scale)), int(round(image_bgr.shape[0] * scale)))
        image = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
    if gray:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    boxes, scaled = scale_chart_results(boxes_xyxy, results, scale)
    image = image.copy()
    if len(scaled):
        for name in [n.strip() for n in spec.split(",") if n.strip()]:
            vis = _parts_visualizer() if name == "dp_parts" else build_visualizer(name)
            image = vis.visualize(image, boxes, scaled, scores)
    return add_title(image, title) if title else image


def compare_grid(
    image_bgr: np.ndarray,
    columns: Sequence[Tuple[str, object, Sequence[DensePoseChartResult], object]],
    min_side: int = 512,
) -> np.ndarray:
    """One picture comparing several chart sets on one image, e.g. ground truth and predictions: a column
    per (title, boxes, results, scores), top row the fine parts (`dp_parts,bbox`), bottom row the U and V
    iso-lines on the grey image (`dp_contour`)."""
    top = [chart_panel(image_bgr, b, r, s, f"{t}: body parts I", min_side, "dp_parts,bbox") for t, b, r, s in columns]
    bottom = [chart_panel(image_bgr, b, r, None, f"{t}: U, V iso-lines", min_side, "dp_contour", gray=True)
              for t, b, r, s in columns]
    return stack_rows([side_by_side(top), side_by_side(bottom)])


def side_by_side(panels: Sequence[np.ndarray], gap: int = 6, background=(255, 255, 255)) -> np.ndarray:
    """Panels left to right, top-aligned, `gap` pixels apart (shorter panels padded below)."""
    if not panels:
        raise ValueError("no panel to put side by side")
    height = max(p.shape[0] for p in panels)
    cols = []
    for k, p in enumerate(panels):
        if k:
            cols.append(np.full((height, gap, 3), background, np.uint8))
        pad = np.full((height - p.shape[0], p.shape[1], 3), background, np.uint8)
        cols.append(np.vstack([p, pad]))
    return np.hstack(cols)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 6, background=(255, 255, 255)) -> np.ndarray:
    """Pictures top to bottom, left-aligned, `gap` pixels apart (narrower ones padded on the right)."""
    if not rows:
        raise ValueError("no row to stack")
    width = max(r.shape[1] for r in rows)
    out = []
    for k, r in enumerate(rows):
        if k:
            out.append(np.full((gap, width, 3), background, np.uint8))
        out.append(np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), background, np.uint8)]))
    return np.vstack(out)


def fit_frame(image_bgr: np.ndarray, width: int, height: int, background=(0, 0, 0)) -> np.ndarray:
    """`image_bgr` resized to fit in width x height (aspect kept) and centred on a frame of that size
    (video frames must all have one size)."""
    s = min(width / image_bgr.shape[1], height / image_bgr.shape[0])
    w, h = max(1, int(image_bgr.shape[1] * s)), max(1, int(image_bgr.shape[0] * s))
    im = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    frame = np.full((height, width, 3), background, np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    frame[y0:y0 + h, x0:x0 + w] = im
    return frame


__all__ = ["add_title", "chart_panel", "compare_grid", "dense_chart_results", "fit_frame", "part_palette_lut",
           "scale_chart_results", "side_by_side", "stack_rows"]
