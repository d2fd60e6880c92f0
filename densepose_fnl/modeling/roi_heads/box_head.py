"""Box head: convs then fully connected layers (detectron2's FastRCNNConvFCHead)."""
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from ...layers import Conv2d, c2_msra_fill, c2_xavier_fill, get_norm
from ...structures import ShapeSpec
from ..registry import ROI_BOX_HEAD_REGISTRY


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Module):
    def __init__(self, input_shape: ShapeSpec, conv_dims: List[int], fc_dims: List[int], conv_norm: str = ""):
        super().__init__()
        if not conv_dims and not fc_dims:
            raise ValueError("The box head needs MODEL.ROI_BOX_HEAD.NUM_CONV or NUM_FC > 0")
        self._output_size = (input_shape.channels, input_shape.height, input_shape.width)
        self.conv_norm_relus = []
        for k, dim in enumerate(conv_dims):
            conv = Conv2d(self._output_size[0], dim, kernel_size=3, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, dim), activation=F.relu)
            c2_msra_fill(conv)
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (dim, self._output_size[1], self._output_size[2])
        self.fcs = []
        for k, dim in enumerate(fc_dims):
            in_dim = self._output_size if isinstance(self._output_size, int) else int(
                self._output_size[0] * self._output_size[1] * self._output_size[2])
            fc = nn.Linear(in_dim, dim)
            c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            self._output_size = dim

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "FastRCNNConvFCHead":
        b = cfg.MODEL.ROI_BOX_HEAD
        return cls(input_shape, [b.CONV_DIM] * b.NUM_CONV, [b.FC_DIM] * b.NUM_FC, b.NORM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.conv_norm_relus:
            x = layer(x)
        if self.fcs:
            x = torch.flatten(x, start_dim=1)
            for layer in self.fcs:
                x = F.relu(layer(x))
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        o = self._output_size
        return ShapeSpec(channels=o) if isinstance(o, int) else ShapeSpec(channels=o[0], height=o[1], width=o[2])
