"""ResNet (detectron2 layout and names: `stem.conv1`, `res2.0.conv1`, ... with norms inside convs),
so detectron2 / DensePose R50 checkpoints load as they are."""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from ...layers import Conv2d, FrozenBatchNorm2d, c2_msra_fill, get_norm
from ..registry import BACKBONE_REGISTRY
from .backbone import Backbone


class BasicStem(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN"):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "FrozenBN", stride_in_1x1: bool = True, dilation: int = 1):
        super().__init__()
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                   norm=get_norm(norm, out_channels))
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                            bias=False, groups=num_groups, dilation=dilation,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class ResNet(Backbone):
    def __init__(self, stem: nn.Module, stages: List[List[nn.Module]], out_features: List[str], freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        self.stage_names: List[str] = []
        self._out_feature_strides = {"stem": 4}
        self._out_feature_channels = {"stem": stem.conv1.out_channels}
        stride = 4
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            stride *= 2 if i > 0 else 1
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = blocks[-1].conv3.out_channels
        unknown = [f for f in out_features if f not in self._out_feature_strides]
        if unknown:
            raise ValueError(f"MODEL.RESNETS.OUT_FEATURES {unknown} not in {list(self._out_feature_strides)}")
        self._out_features = list(out_features)
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        modules = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for module in modules[:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)
            FrozenBatchNorm2d.convert_frozen_batchnorm(module)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape=None) -> ResNet:
    r = cfg.MODEL.RESNETS
    blocks_per_stage = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    if r.DEPTH not in blocks_per_stage:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(blocks_per_stage)}, got {r.DEPTH}")
    if any(r.DEFORM_ON_PER_STAGE):
        raise NotImplementedError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convs are not supported")
    stem = BasicStem(3, r.STEM_OUT_CHANNELS, r.NORM)
    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    max_stage = max(int(f[-1]) for f in r.OUT_FEATURES if f.startswith("res"))
    stages = []
    for idx, n_blocks in enumerate(blocks_per_stage[r.DEPTH][: max_stage - 1]):
        dilation = r.RES5_DILATION if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        blocks = []
        for b in range(n_blocks):
            blocks.append(BottleneckBlock(in_ch, out_ch, bottleneck, stride=first_stride if b == 0 else 1,
                                          num_groups=r.NUM_GROUPS, norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1,
                                          dilation=dilation))
            in_ch = out_ch
        stages.append(blocks)
        out_ch *= 2
        bottleneck *= 2
    return ResNet(stem, stages, list(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
