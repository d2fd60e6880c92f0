"""Feature Pyramid Network (detectron2 semantics: 1x1 laterals, 3x3 outputs, nearest x2 top-down, P6 by
stride-2 subsampling of P5)."""
import math
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ...layers import Conv2d, c2_xavier_fill, get_norm
from ..registry import BACKBONE_REGISTRY
from .backbone import Backbone
from .resnet import build_resnet_backbone
from .timm_backbone import build_timm_backbone


class LastLevelMaxPool(nn.Module):
    """P6 = max_pool(P5, kernel 1, stride 2), as detectron2's `LastLevelMaxPool`."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class FPN(Backbone):
    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm: str = "",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
    ):
        super().__init__()
        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"MODEL.FPN.IN_FEATURES {missing} are not backbone outputs {list(input_shapes)}")
        strides = [input_shapes[f].stride for f in in_features]
        channels = [input_shapes[f].channels for f in in_features]
        for s0, s1 in zip(strides[:-1], strides[1:]):
            if s1 != 2 * s0:
                raise ValueError(f"FPN inputs must have strides doubling level by level, got {strides}")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got '{fuse_type}'")
        lateral_convs, output_convs = [], []
        use_bias = norm == ""
        for in_ch, stride in zip(channels, strides):
            stage = int(math.log2(stride))
            lateral = Conv2d(in_ch, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels))
            output = Conv2d(out_channels, out_channels, 3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels))
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # top level first, as the top-down pass visits them
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for k in range(top_block.num_levels):
                self._out_feature_strides[f"p{last + k + 1}"] = 2 ** (last + k + 1)
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for idx in range(1, len(self.lateral_convs)):
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, self.output_convs[idx](prev))
        if self.top_block is not None:
            results.extend(self.top_block(results[self._out_features.index(self.top_block.in_feature)]))
        return dict(zip(self._out_features, results))


def fpn_from_config(cfg, bottom_up: Backbone) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=list(cfg.MODEL.FPN.IN_FEATURES),
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape=None) -> FPN:
    return fpn_from_config(cfg, build_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape=None) -> FPN:
    return fpn_from_config(cfg, build_timm_backbone(cfg, input_shape))
