from abc import ABCMeta, abstractmethod
from typing import Dict

import torch
from torch import nn

from ...structures import ShapeSpec


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network that maps an image batch (N, 3, H, W) to named feature maps (dict name -> tensor)."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pass

    @property
    def size_divisibility(self) -> int:
        """Input sides must be padded to a multiple of this (0: no constraint)."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
