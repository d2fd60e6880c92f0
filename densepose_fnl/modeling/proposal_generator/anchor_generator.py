"""Anchors per feature level (detectron2's DefaultAnchorGenerator: same cell anchors, same order)."""
import math
from typing import List, Sequence

import torch
from torch import nn

from ...structures import ShapeSpec
from ..registry import ANCHOR_GENERATOR_REGISTRY


def _broadcast_params(params: Sequence, num_features: int, name: str) -> List[List[float]]:
    params = [list(p) if isinstance(p, (list, tuple)) else [p] for p in params]
    if len(params) == 1:
        return params * num_features
    if len(params) != num_features:
        raise ValueError(f"MODEL.ANCHOR_GENERATOR.{name} has {len(params)} entries for {num_features} feature maps")
    return params


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(len(sizes) * len(aspect_ratios), 4) XYXY anchors centred at 0; sizes outer loop, ratios inner."""
    anchors = []
    for size in sizes:
        area = size**2.0
        for aspect_ratio in aspect_ratios:
            w = math.sqrt(area / aspect_ratio)
            h = aspect_ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    box_dim = 4

    def __init__(self, sizes, aspect_ratios, strides: List[int], offset: float = 0.0):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "SIZES")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "ASPECT_RATIOS")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        self.offset = offset
        for i, (s, a) in enumerate(zip(sizes, aspect_ratios)):
            # not persistent: derived from the config, never part of a checkpoint
            self.register_buffer(f"cell_anchors_{i}", generate_cell_anchors(s, a), persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> "DefaultAnchorGenerator":
        a = cfg.MODEL.ANCHOR_GENERATOR
        return cls(a.SIZES, a.ASPECT_RATIOS, [s.stride for s in input_shape], a.OFFSET)

    @property
    def cell_anchors(self) -> List[torch.Tensor]:
        return [getattr(self, f"cell_anchors_{i}") for i in range(self.num_features)]

    @property
    def num_cell_anchors(self) -> List[int]:
        return [len(a) for a in self.cell_anchors]

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level, (Hi * Wi * A, 4) anchors in image pixels, location-major then cell anchor."""
        anchors = []
        for x, stride, base in zip(features, self.strides, self.cell_anchors):
            h, w = x.shape[-2:]
            shifts_x = torch.arange(w, device=base.device, dtype=torch.float32) * stride + self.offset * stride
            shifts_y = torch.arange(h, device=base.device, dtype=torch.float32) * stride + self.offset * stride
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def anchors_at(self, level: int, feature: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """`forward(features)[level][indices]` without building the level's whole grid: the RPN keeps only
        its top-k anchors per level, so the exported graph makes k anchors instead of H * W * A (same
        arithmetic, same values)."""
        base = self.cell_anchors[level]
        stride = self.strides[level]
        num_cell = base.shape[0]
        w = feature.shape[-1]
        # remainders written as i - (i // n) * n: ONNX export has no remainder by a symbolic size
        cell = indices // num_cell
        a = indices - cell * num_cell
        y = cell // w
        shift_x = (cell - y * w).to(torch.float32) * stride + self.offset * stride
        shift_y = y.to(torch.float32) * stride + self.offset * stride
        return torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1) + base[a]
