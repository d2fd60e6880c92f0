from .decoder import FinestLevelDecoder, PanopticFPNDecoder
from .heads import ASPP, DensePoseDeepLabHead, DensePoseV1ConvXHead, build_densepose_head
from .predictor import DensePoseChartPredictor, build_densepose_predictor

__all__ = ["ASPP", "DensePoseChartPredictor", "DensePoseDeepLabHead", "DensePoseV1ConvXHead", "FinestLevelDecoder",
           "PanopticFPNDecoder", "build_densepose_head", "build_densepose_predictor"]
