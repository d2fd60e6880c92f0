"""Export adapter of `modeling.poolers.ROIPooler`: same level assignment and same numbers, ONNX-friendly ops.

The model's pooler orders RoIs with `argsort(levels, stable=True)`, which the ONNX exporter cannot
translate (no stable sort in ONNX). Here the sort key is `level * R + index`: all keys differ, so any
sort (ONNX TopK) gives the stable order. Pooling stays sort / pool per level / gather back (no
ScatterElements, which dominates ONNX Runtime profiles of per-level poolers), on float features.
"""
from typing import List

import torch
from torch import nn

from ..modeling.poolers import ROIPooler, assign_boxes_to_levels, boxes_to_pooler_format


class ExportableROIPooler(nn.Module):
    def __init__(self, pooler: ROIPooler):
        super().__init__()
        self.pooler = pooler

    def forward(self, x: List[torch.Tensor], box_lists: List[torch.Tensor]) -> torch.Tensor:
        p = self.pooler
        if len(x) != len(p.scales):
            raise ValueError(f"ROIPooler got {len(x)} feature maps for {len(p.scales)} scales")
        rois = boxes_to_pooler_format(box_lists)
        if len(p.scales) == 1:
            return p._pool(x[0], rois, p.scales[0])
        levels = assign_boxes_to_levels(rois[:, 1:], p.min_level, p.max_level, p.canonical_box_size,
                                        p.canonical_level)
        n = rois.shape[0]
        key = levels * n + torch.arange(n, dtype=levels.dtype)
        order = torch.argsort(key)
        sorted_rois, sorted_levels = rois[order], levels[order]
        pooled = [p._pool(x_l, sorted_rois[sorted_levels == l], p.scales[l]) for l, x_l in enumerate(x)]
        return torch.cat(pooled, dim=0)[torch.argsort(order)]
