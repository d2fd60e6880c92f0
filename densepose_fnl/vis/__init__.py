"""Visualizers of DensePose chart results (numpy + OpenCV), one concern per module.

    from densepose_fnl.vis import build_visualizer
    vis = build_visualizer("bbox,dp_contour")          # or dp_segm, dp_u, dp_v, dp_iuv_texture
    picture = vis.visualize(image_bgr, boxes_xyxy, results, scores)
"""
from typing import Callable, Dict, Optional

import numpy as np

from .base import CompoundVisualizer, MaskedColormapVisualizer, Visualizer
from .bounding_box import BoundingBoxVisualizer
from .contour import ContourVisualizer
from .segmentation import FineSegmentationVisualizer
from .texture import TextureVisualizer, load_texture_atlas
from .uv import UVisualizer, VVisualizer

VISUALIZERS: Dict[str, Callable[..., Visualizer]] = {
    "bbox": lambda texture_atlas=None: BoundingBoxVisualizer(),
    "dp_segm": lambda texture_atlas=None: FineSegmentationVisualizer(),
    "dp_u": lambda texture_atlas=None: UVisualizer(),
    "dp_v": lambda texture_atlas=None: VVisualizer(),
    "dp_contour": lambda texture_atlas=None: ContourVisualizer(),
    "dp_iuv_texture": lambda texture_atlas=None: TextureVisualizer(texture_atlas),
}


def build_visualizer(spec: str, texture_atlas: Optional[np.ndarray] = None) -> Visualizer:
    """Comma-separated names of `VISUALIZERS` -> one visualizer (applied left to right)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no visualizer given; choose from {', '.join(sorted(VISUALIZERS))}")
    unknown = [n for n in names if n not in VISUALIZERS]
    if unknown:
        raise ValueError(f"unknown visualizer(s) {', '.join(unknown)}; choose from {', '.join(sorted(VISUALIZERS))}")
    vis = [VISUALIZERS[n](texture_atlas=texture_atlas) for n in names]
    return vis[0] if len(vis) == 1 else CompoundVisualizer(vis)


__all__ = [
    "BoundingBoxVisualizer",
    "CompoundVisualizer",
    "ContourVisualizer",
    "FineSegmentationVisualizer",
    "MaskedColormapVisualizer",
    "TextureVisualizer",
    "UVisualizer",
    "VISUALIZERS",
    "VVisualizer",
    "Visualizer",
    "build_visualizer",
    "load_texture_atlas",
]
