"""Visualizers of DensePose chart results (numpy + OpenCV), one concern per module.

    from densepose_fnl.vis import build_visualizer
    vis = build_visualizer("bbox,dp_contour")   # or dp_segm, dp_u, dp_v, dp_iuv_texture, dp_uv_confidence
    picture = vis.visualize(image_bgr, boxes_xyxy, results, scores)

CSE results (`DensePoseEmbeddingResult`) draw with dp_vertex and dp_cse_texture, and with every chart
visualizer when they carry charts (SMPL, `postprocess.cse.VertexChartMap`); `vis.needs_charts` says which.
"""
from typing import Callable, Dict, Optional

import numpy as np

from .base import CompoundVisualizer, MaskedColormapVisualizer, Visualizer
from .bounding_box import BoundingBoxVisualizer
from .contour import ContourVisualizer
from .segmentation import FineSegmentationVisualizer
from .texture import TextureVisualizer, load_texture_atlas
from .uv import UVisualizer, VVisualizer
from .uv_confidence import UVConfidenceVisualizer
from .vertex import CseTextureVisualizer, VertexVisualizer, load_texture_atlases, vertex_values

# factories take the keyword options of build_visualizer (texture_atlas, uv_confidence_epsilon, texture_atlases)
VISUALIZERS: Dict[str, Callable[..., Visualizer]] = {
    "bbox": lambda **kw: BoundingBoxVisualizer(),
    "dp_segm": lambda **kw: FineSegmentationVisualizer(),
    "dp_u": lambda **kw: UVisualizer(),
    "dp_v": lambda **kw: VVisualizer(),
    "dp_contour": lambda **kw: ContourVisualizer(),
    "dp_iuv_texture": lambda texture_atlas=None, **kw: TextureVisualizer(texture_atlas),
    "dp_uv_confidence": lambda uv_confidence_epsilon=0.01, **kw: UVConfidenceVisualizer(epsilon=uv_confidence_epsilon),
    "dp_vertex": lambda **kw: VertexVisualizer(),
    "dp_cse_texture": lambda texture_atlases=None, **kw: CseTextureVisualizer(texture_atlases),
}


def build_visualizer(spec: str, texture_atlas: Optional[np.ndarray] = None,
                     uv_confidence_epsilon: float = 0.01,
                     texture_atlases: Optional[Dict[str, np.ndarray]] = None) -> Visualizer:
    """Comma-separated names of `VISUALIZERS` -> one visualizer (applied left to right).
    `uv_confidence_epsilon`: the model's MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.EPSILON (dp_uv_confidence);
    `texture_atlases`: {mesh name: texture image} (dp_cse_texture)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no visualizer given; choose from {', '.join(sorted(VISUALIZERS))}")
    unknown = [n for n in names if n not in VISUALIZERS]
    if unknown:
        raise ValueError(f"unknown visualizer(s) {', '.join(unknown)}; choose from {', '.join(sorted(VISUALIZERS))}")
    vis = [VISUALIZERS[n](texture_atlas=texture_atlas, uv_confidence_epsilon=uv_confidence_epsilon,
                          texture_atlases=texture_atlases) for n in names]
    return vis[0] if len(vis) == 1 else CompoundVisualizer(vis)


__all__ = [
    "BoundingBoxVisualizer",
    "CompoundVisualizer",
    "ContourVisualizer",
    "CseTextureVisualizer",
    "FineSegmentationVisualizer",
    "MaskedColormapVisualizer",
    "TextureVisualizer",
    "UVConfidenceVisualizer",
    "UVisualizer",
    "VISUALIZERS",
    "VVisualizer",
    "VertexVisualizer",
    "Visualizer",
    "build_visualizer",
    "load_texture_atlas",
    "load_texture_atlases",
    "vertex_values",
]
