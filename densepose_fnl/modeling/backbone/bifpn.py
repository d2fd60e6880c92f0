"""BiFPN neck of Mobile Parsing R-CNN (paper 3.2, DensePoseFnL semantics).

One bidirectional pass over P2-P5: 1x1 lateral convs, a top-down path (P5 -> P4_td -> P3_td -> P2_out)
and a bottom-up path (P2_out -> P3_out -> P4_out -> P5_out), each node = fast normalized fusion of its
inputs followed by depthwise-separable 3x3 conv + BN + ReLU; nearest-neighbour x2 up-sampling and
stride-2 depthwise-separable convs for down-sampling; P6 = stride-2 subsampling of P5_out.
"""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from ...layers import get_norm
from ...utils import comm
from ..registry import BACKBONE_REGISTRY
from .backbone import Backbone
from .fpn import LastLevelMaxPool
from .timm_backbone import build_timm_backbone


class DepthwiseSeparableConv2d(nn.Sequential):
    """Depthwise k x k conv (no bias) then point-wise 1x1 conv (children `0` and `1`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=in_channels,
                      bias=False),
            nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=bias),
        )


class SeparableConvBNReLU(nn.Sequential):
    """A BiFPN node's conv: depthwise-separable 3x3 (children `0.0`, `0.1`), BN (`1`), ReLU (`2`)."""

    def __init__(self, channels: int, stride: int = 1, norm: str = "BN", bn_momentum: float = 0.03):
        bn = get_norm(norm, channels)
        bn.momentum = bn_momentum
        super().__init__(
            DepthwiseSeparableConv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False),
            bn,
            nn.ReLU(inplace=True),
        )


class FastNormalizedFusion(nn.Module):
    """sum_i relu(w_i) x_i / (sum_i relu(w_i) + eps), EfficientDet's fast normalized fusion."""

    def __init__(self, in_nodes: int, eps: float = 1e-4):
        super().__init__()
        self.in_nodes = in_nodes
        self.weight = nn.Parameter(torch.ones(in_nodes, dtype=torch.float32))
        self.register_buffer("eps", torch.tensor(eps))

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.in_nodes:
            raise ValueError(f"Expected {self.in_nodes} inputs, got {len(inputs)}")
        weight = F.relu(self.weight)
        # normalise the few weights, not the fused map: same value, and no full-size division (which an
        # int8 graph would run in float between a dequantize and a quantize)
        weight = weight / (weight.sum() + self.eps)
        fused = inputs[0] * weight[0]
        for i in range(1, self.in_nodes):
            fused = fused + inputs[i] * weight[i]
        return fused


class BiFPN(Backbone):
    def __init__(self, bottom_up: Backbone, in_features: List[str], out_channels: int, norm: str = "BN"):
        super().__init__()
        shapes = bottom_up.output_shape()
        if len(in_features) != 4:
            raise ValueError(f"BiFPN takes 4 input levels (strides 4, 8, 16, 32), got {in_features}")
        strides = [shapes[f].stride for f in in_features]
        if strides != [4, 8, 16, 32]:
            raise ValueError(f"BiFPN inputs must have strides [4, 8, 16, 32], got {strides} for {in_features}")
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        ch = [shapes[f].channels for f in in_features]
        self.l5 = nn.Conv2d(ch[3], out_channels, kernel_size=1)
        self.l4 = nn.Conv2d(ch[2], out_channels, kernel_size=1)
        self.l3 = nn.Conv2d(ch[1], out_channels, kernel_size=1)
        self.l2 = nn.Conv2d(ch[0], out_channels, kernel_size=1)
        self.p4_tr = SeparableConvBNReLU(out_channels, norm=norm)
        self.p3_tr = SeparableConvBNReLU(out_channels, norm=norm)
        self.fuse_p4_tr = FastNormalizedFusion(2)
        self.fuse_p3_tr = FastNormalizedFusion(2)
        self.down_p2 = SeparableConvBNReLU(out_channels, stride=2, norm=norm)
        self.down_p3 = SeparableConvBNReLU(out_channels, stride=2, norm=norm)
        self.down_p4 = SeparableConvBNReLU(out_channels, stride=2, norm=norm)
        self.fuse_p5_out = FastNormalizedFusion(2)
        self.fuse_p4_out = FastNormalizedFusion(3)
        self.fuse_p3_out = FastNormalizedFusion(3)
        self.fuse_p2_out = FastNormalizedFusion(2)
        self.p5_out = SeparableConvBNReLU(out_channels, norm=norm)
        self.p4_out = SeparableConvBNReLU(out_channels, norm=norm)
        self.p3_out = SeparableConvBNReLU(out_channels, norm=norm)
        self.p2_out = SeparableConvBNReLU(out_channels, norm=norm)
        self.top_block = LastLevelMaxPool()
        self._out_features = ["p2", "p3", "p4", "p5", "p6"]
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._out_feature_strides = {k: 2 ** (i + 2) for i, k in enumerate(self._out_features)}

    @property
    def size_divisibility(self) -> int:
        return 32

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.bottom_up(x)
        c2, c3, c4, c5 = (feats[f] for f in self.in_features)
        p5, p4, p3, p2 = self.l5(c5), self.l4(c4), self.l3(c3), self.l2(c2)
        p4_tr = self.p4_tr(self.fuse_p4_tr([p4, self._up(p5)]))
        p3_tr = self.p3_tr(self.fuse_p3_tr([p3, self._up(p4_tr)]))
        p2_out = self.p2_out(self.fuse_p2_out([p2, self._up(p3_tr)]))
        p3_out = self.p3_out(self.fuse_p3_out([p3, p3_tr, self.down_p2(p2_out)]))
        p4_out = self.p4_out(self.fuse_p4_out([p4, p4_tr, self.down_p3(p3_out)]))
        p5_out = self.p5_out(self.fuse_p5_out([p5, self.down_p4(p4_out)]))
        return {"p2": p2_out, "p3": p3_out, "p4": p4_out, "p5": p5_out, "p6": self.top_block(p5_out)[0]}


def _bifpn_norm(cfg) -> str:
    # DensePoseFnL: BN, synchronized across processes when training distributed
    if cfg.MODEL.FPN.NORM in ("BN", "SyncBN", "FrozenBN"):
        return cfg.MODEL.FPN.NORM
    if cfg.MODEL.FPN.NORM:
        raise ValueError(f"MODEL.FPN.NORM for BiFPN must be '', BN, SyncBN or FrozenBN, got '{cfg.MODEL.FPN.NORM}'")
    return "SyncBN" if comm.get_world_size() > 1 else "BN"


@BACKBONE_REGISTRY.register()
def build_timm_bifpn_backbone(cfg, input_shape=None) -> BiFPN:
    bottom_up = build_timm_backbone(cfg, input_shape)
    return BiFPN(bottom_up, list(bottom_up.output_shape().keys()), cfg.MODEL.FPN.OUT_CHANNELS, _bifpn_norm(cfg))
