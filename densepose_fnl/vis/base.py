"""Shared pieces of the visualizers: person regions cropped to the image, colormaps, masked blending.

Every visualizer has `visualize(image_bgr, boxes_xyxy, results, scores=None) -> image_bgr`: image_bgr is
uint8 [H, W, 3] (not modified; a new image is returned), boxes_xyxy (N, 4) in image pixels (tensor or
array), results N `DensePoseChartResult` over their boxes (placed at the truncated box corner, as
`postprocess.charts.int_box_xywh` sizes them), scores (N,) optional (used by the box visualizer).
Everything is numpy + OpenCV (no matplotlib); overlays are blended only inside each person's
foreground (part label > 0).
"""
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import torch

from ..structures import DensePoseChartResult

N_PART_LABELS = 24


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 BGR image, got {getattr(image_bgr, 'shape', type(image_bgr))}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")


@dataclass
class PersonRegion:
    """One person's result cropped to the image: image[ys, xs] <-> labels / u / v (same shape)."""

    index: int
    ys: slice
    xs: slice
    labels: np.ndarray  # int64 [h, w], 0 = background
    u: np.ndarray  # float32 [h, w] in [0, 1]
    v: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        return self.labels > 0


def person_regions(
    image_shape, boxes_xyxy, results: Sequence[DensePoseChartResult]
) -> Iterator[PersonRegion]:
    """Each person's labels / U / V placed at its truncated box corner, cropped to the image."""
    height, width = int(image_shape[0]), int(image_shape[1])
    boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    if len(boxes) != len(results):
        raise ValueError(f"{len(boxes)} boxes but {len(results)} DensePose results")
    for k, result in enumerate(results):
        if getattr(result, "labels", None) is None or getattr(result, "uv", None) is None:
            raise ValueError(f"chart visualizers need chart results (I, U, V); person {k} has none (a CSE result "
                             f"of mesh '{getattr(result, 'mesh_name', '?')}' without charts: use dp_vertex / "
                             "dp_cse_texture, or the SMPL chart files)")
        labels = as_numpy(result.labels).astype(np.int64)
        uv = as_numpy(result.uv).astype(np.float32)
        crop = crop_to_image(height, width, boxes[k], labels.shape)
        if crop is None:
            continue
        (ys, xs), (sy, sx) = crop
        yield PersonRegion(k, ys, xs, labels[sy, sx], np.clip(uv[0][sy, sx], 0, 1), np.clip(uv[1][sy, sx], 0, 1))


def crop_to_image(height: int, width: int, box_xyxy, hw):
    """A person's (h, w) map placed at its truncated box corner, cropped to the image: ((image ys, xs),
    (map ys, xs)) slices, or None when nothing of it is inside."""
    h, w = int(hw[0]), int(hw[1])
    x0, y0 = int(box_xyxy[0]), int(box_xyxy[1])
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, height), min(x0 + w, width)
    if ye <= ys or xe <= xs:
        return None
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))


def colorize(values_0_255: np.ndarray, cmap: int = cv2.COLORMAP_PARULA) -> np.ndarray:
    """[h, w] values in [0, 255] (any dtype) -> BGR uint8 [h, w, 3] through an OpenCV colormap."""
    v8 = np.clip(values_0_255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(v8, cmap)


def blend_masked(image: np.ndarray, region: PersonRegion, overlay_bgr: np.ndarray, mask: np.ndarray, alpha) -> None:
    """In place: image[region][mask] = (1 - alpha) * image + alpha * overlay (alpha scalar or [h, w])."""
    if not np.any(mask):
        return
    target = image[region.ys, region.xs]
    a = np.asarray(alpha, dtype=np.float32)
    if a.ndim == 2:
        a = a[mask][:, None]
    base = target[mask].astype(np.float32)
    mixed = base * (1.0 - a) + overlay_bgr[mask].astype(np.float32) * a
    target[mask] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class Visualizer:
    """Base class; subclasses implement `draw(image, boxes, results, scores)` in place on a copy.
    `needs_charts`: whether it reads chart results (labels / uv); CSE results have them only for SMPL."""

    needs_charts = True

    def visualize(self, image_bgr: np.ndarray, boxes_xyxy, results, scores: Optional[Sequence[float]] = None) -> np.ndarray:
        check_image(image_bgr)
        image = image_bgr.copy()
        if boxes_xyxy is None or len(as_numpy(boxes_xyxy).reshape(-1, 4)) == 0:
            return image
        self.draw(image, boxes_xyxy, results, scores)
        return image

    def draw(self, image: np.ndarray, boxes_xyxy, results, scores) -> None:
        raise NotImplementedError


class MaskedColormapVisualizer(Visualizer):
    """A per-pixel value in [0, 255] through a colormap, alpha-blended inside each person's foreground."""

    def __init__(self, alpha: float = 0.7, cmap: int = cv2.COLORMAP_PARULA):
        self.alpha = float(alpha)
        self.cmap = cmap

    def values(self, region: PersonRegion) -> np.ndarray:
        raise NotImplementedError

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        for region in person_regions(image.shape, boxes_xyxy, results):
            blend_masked(image, region, colorize(self.values(region), self.cmap), region.foreground, self.alpha)


class CompoundVisualizer(Visualizer):
    """Several visualizers applied one after the other (e.g. `bbox,dp_contour`)."""

    def __init__(self, visualizers: Sequence[Visualizer]):
        self.visualizers = list(visualizers)

    @property
    def needs_charts(self) -> bool:
        return any(v.needs_charts for v in self.visualizers)

    def visualize(self, image_bgr, boxes_xyxy, results, scores=None) -> np.ndarray:
        check_image(image_bgr)
        image = image_bgr.copy()
        for vis in self.visualizers:
            image = vis.visualize(image, boxes_xyxy, results, scores)
        return image
