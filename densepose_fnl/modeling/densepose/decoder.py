"""Decoders that merge pyramid levels into the single map the DensePose head pools from."""
from typing import Dict, List

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...layers import Conv2d, c2_msra_fill, get_norm
from ...structures import ShapeSpec


class FinestLevelDecoder(nn.Module):
    """Parsing R-CNN / DensePoseFnL "simple" decoder: the finest level (P2) as it is."""

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        return features[0]


class PanopticFPNDecoder(nn.Module):
    """detectron2 DensePose's decoder (Panoptic FPN semantic head): per level 3x3 convs with x2 bilinear
    up-sampling down to the common stride, summed, then a 1x1 conv. Children are named by level."""

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str], num_classes: int = 256,
                 conv_dims: int = 256, common_stride: int = 4, norm: str = ""):
        super().__init__()
        self.in_features = list(in_features)
        self.scale_heads = []
        for f in self.in_features:
            stride, ch = input_shape[f].stride, input_shape[f].channels
            ops = []
            for k in range(max(1, int(np.log2(stride) - np.log2(common_stride)))):
                conv = Conv2d(ch if k == 0 else conv_dims, conv_dims, 3, padding=1, bias=not norm,
                              norm=get_norm(norm, conv_dims), activation=F.relu)
                c2_msra_fill(conv)
                ops.append(conv)
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            head = nn.Sequential(*ops)
            self.add_module(f, head)
            self.scale_heads.append(head)
        self.predictor = Conv2d(conv_dims, num_classes, 1)
        c2_msra_fill(self.predictor)
        self.output_shape = ShapeSpec(channels=num_classes)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = self.scale_heads[0](features[0])
        for head, feature in zip(self.scale_heads[1:], features[1:]):
            x = x + head(feature)
        return self.predictor(x)
