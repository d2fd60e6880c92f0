"""Chart predictor: transposed convs (stride 2) to coarse segmentation, fine segmentation, U and V, then
bilinear up-sampling by UP_SCALE (detectron2 DensePose's DensePoseChartPredictor)."""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ...structures import DensePoseChartPredictorOutput
from ..registry import DENSEPOSE_PREDICTOR_REGISTRY, get_from_registry


class DensePoseChartPredictor(nn.Module):
    output_type = DensePoseChartPredictorOutput  # built from `forward_tensors`' tuple, in field order

    def __init__(self, input_channels: int, num_coarse_segm_channels: int = 2, num_patches: int = 24,
                 deconv_kernel: int = 4, up_scale: int = 2):
        super().__init__()
        padding = int(deconv_kernel / 2 - 1)

        def deconv(out_channels: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(input_channels, out_channels, deconv_kernel, stride=2, padding=padding)

        self.ann_index_lowres = deconv(num_coarse_segm_channels)
        self.index_uv_lowres = deconv(num_patches + 1)
        self.u_lowres = deconv(num_patches + 1)
        self.v_lowres = deconv(num_patches + 1)
        self.scale_factor = up_scale
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseChartPredictor":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        if h.UV_CONFIDENCE.ENABLED or h.SEGM_CONFIDENCE.ENABLED:
            raise NotImplementedError(
                "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE / SEGM_CONFIDENCE: chart confidence estimation "
                "(e.g. the WC2M models) is not supported yet")
        if h.NUM_COARSE_SEGM_CHANNELS not in (2, 15):
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS must be 2 or 15, "
                             f"got {h.NUM_COARSE_SEGM_CHANNELS}")
        return cls(input_channels, h.NUM_COARSE_SEGM_CHANNELS, h.NUM_PATCHES, h.DECONV_KERNEL, h.UP_SCALE)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor == 1:  # identity: skip the op (same numbers as interpolating by 1)
            return x
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward_tensors(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(coarse_segm, fine_segm, u, v), each (N, C, HEATMAP_SIZE, HEATMAP_SIZE)."""
        return (self._upsample(self.ann_index_lowres(x)), self._upsample(self.index_uv_lowres(x)),
                self._upsample(self.u_lowres(x)), self._upsample(self.v_lowres(x)))

    def forward(self, x: torch.Tensor) -> DensePoseChartPredictorOutput:
        return self.output_type(*self.forward_tensors(x))


# detectron2's default predictor name; with confidences disabled it is the plain chart predictor
DENSEPOSE_PREDICTOR_REGISTRY.register(DensePoseChartPredictor)
DENSEPOSE_PREDICTOR_REGISTRY._do_register("DensePoseChartWithConfidencePredictor", DensePoseChartPredictor)

_NOT_SUPPORTED = ("DensePoseEmbeddingPredictor", "DensePoseEmbeddingWithConfidencePredictor",
                  "DensePoseEmbeddingConfidencePredictor")


def build_densepose_predictor(cfg, input_channels: int) -> nn.Module:
    name = cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME
    if name in _NOT_SUPPORTED:
        raise NotImplementedError(
            f"MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME '{name}': continuous surface embeddings (CSE) are not "
            "supported yet; chart-based models (DensePoseChartPredictor) are")
    return get_from_registry(DENSEPOSE_PREDICTOR_REGISTRY, name, "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME"
                             ).from_config(cfg, input_channels)
