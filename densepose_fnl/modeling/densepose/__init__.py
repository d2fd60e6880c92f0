from .decoder import FinestLevelDecoder, PanopticFPNDecoder
from .embedder import Embedder, VertexDirectEmbedder, VertexFeatureEmbedder, build_densepose_embedder
from .heads import ASPP, DensePoseDeepLabHead, DensePoseV1ConvXHead, build_densepose_head
from .predictor import DensePoseChartPredictor, DensePoseEmbeddingPredictor, build_densepose_predictor

__all__ = ["ASPP", "DensePoseChartPredictor", "DensePoseDeepLabHead", "DensePoseEmbeddingPredictor",
           "DensePoseV1ConvXHead", "Embedder", "FinestLevelDecoder", "PanopticFPNDecoder", "VertexDirectEmbedder",
           "VertexFeatureEmbedder", "build_densepose_embedder", "build_densepose_head", "build_densepose_predictor"]
