"""Multi-level RoI pooling (detectron2's ROIPooler semantics).

Each box goes to pyramid level floor(4 + log2(sqrt(area) / 224 + 1e-8)) clamped to the available levels.
RoIs are sorted by level, pooled level by level and put back in order with one gather: no scatter
(per-level scatter dominates ONNX Runtime time) and no Python branch on how many boxes a level got.
Float island for int8: pooling runs on float features (paper 3.4).
Eager CPU inference on channels-last maps (TEST.CHANNELS_LAST) takes `roi_align_bags` (layers/roi_align.py).
"""
import math
from typing import List, Sequence

import torch
from torch import nn
from torchvision.ops import roi_pool

from ..layers.eager_threads import eager_cpu_inference
from ..layers.roi_align import roi_align_bags, threaded_roi_align


def boxes_to_pooler_format(box_lists: List[torch.Tensor]) -> torch.Tensor:
    """List of (Ri, 4) XYXY boxes per image -> (sum Ri, 5) rows of (image index, x0, y0, x1, y1)."""
    rows = []
    for i, boxes in enumerate(box_lists):
        rows.append(torch.cat([torch.full_like(boxes[:, :1], float(i)), boxes], dim=1))
    return torch.cat(rows, dim=0)


def assign_boxes_to_levels(boxes: torch.Tensor, min_level: int, max_level: int, canonical_box_size: int = 224,
                           canonical_level: int = 4) -> torch.Tensor:
    """0-based level index (relative to min_level) for each (R, 4) XYXY box."""
    box_sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    def __init__(self, output_size: int, scales: Sequence[float], sampling_ratio: int, pooler_type: str,
                 canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        if pooler_type not in ("ROIAlign", "ROIAlignV2", "ROIPool"):
            raise ValueError(f"Unknown POOLER_TYPE '{pooler_type}': expected ROIAlign, ROIAlignV2 or ROIPool")
        self.output_size = (int(output_size), int(output_size))
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = int(sampling_ratio)
        self.pooler_type = pooler_type
        # ROIAlignV2 = pixel-aligned (half-pixel shift), ROIAlign = Detectron1's legacy alignment
        self.aligned = pooler_type == "ROIAlignV2"
        self.min_level = int(-math.log2(self.scales[0]))
        self.max_level = int(-math.log2(self.scales[-1]))
        if not (math.isclose(self.scales[0], 2.0**-self.min_level) and
                len(self.scales) == self.max_level - self.min_level + 1):
            raise ValueError(f"Pooler scales {self.scales} must be consecutive powers of 1/2")
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def _pool(self, x: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        x = x.float()
        if self.pooler_type == "ROIPool":
            return roi_pool(x, rois, self.output_size, scale)
        return threaded_roi_align(x, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def _uses_bags(self, x: List[torch.Tensor], rois: torch.Tensor) -> bool:
        """Eager CPU inference of RoIAlign on channels-last float maps: `roi_align_bags`."""
        return (self.pooler_type != "ROIPool" and eager_cpu_inference(rois, *x)
                and all(f.dtype == torch.float32 and f.dim() == 4 and f.shape[1] > 1
                        and f.is_contiguous(memory_format=torch.channels_last) for f in x))

    def _forward_bags(self, x: List[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Each level's RoIs by `roi_align_bags`, copied once into their rows of the (R, C, oh, ow) output
        (channels-last)."""
        oh, ow = self.output_size
        channels = x[0].shape[1]
        out = x[0].new_empty(rois.shape[0], oh * ow * channels)
        for level, (x_l, scale) in enumerate(zip(x, self.scales)):
            rows = (levels == level).nonzero()[:, 0]
            if len(rows):
                values, order = roi_align_bags(x_l, rois[rows], self.output_size, scale, self.sampling_ratio,
                                               self.aligned)
                out.index_copy_(0, rows[order], values)
        return out.reshape(rois.shape[0], oh, ow, channels).permute(0, 3, 1, 2)

    def forward(self, x: List[torch.Tensor], box_lists: List[torch.Tensor]) -> torch.Tensor:
        if len(x) != len(self.scales):
            raise ValueError(f"ROIPooler got {len(x)} feature maps for {len(self.scales)} scales")
        rois = boxes_to_pooler_format(box_lists)
        if self._uses_bags(x, rois):
            levels = (torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device) if len(self.scales) == 1 else
                      assign_boxes_to_levels(rois[:, 1:], self.min_level, self.max_level, self.canonical_box_size,
                                             self.canonical_level))
            return self._forward_bags(x, rois, levels)
        if len(self.scales) == 1:
            return self._pool(x[0], rois, self.scales[0])
        levels = assign_boxes_to_levels(rois[:, 1:], self.min_level, self.max_level, self.canonical_box_size,
                                        self.canonical_level)
        # unique keys (level, then original index): any sort gives the stable order, and ONNX has no stable sort
        n = rois.shape[0]
        order = torch.argsort(levels * n + torch.arange(n, dtype=levels.dtype, device=levels.device))
        sorted_rois, sorted_levels = rois[order], levels[order]
        pooled = [self._pool(x_l, sorted_rois[sorted_levels == l], self.scales[l]) for l, x_l in enumerate(x)]
        return torch.cat(pooled, dim=0)[torch.argsort(order)]
