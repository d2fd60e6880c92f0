from .densepose_outputs import (
    CONFIDENCE_NAMES,
    DensePoseChartPredictorOutput,
    DensePoseChartPredictorOutputWithConfidences,
    DensePoseChartResult,
    DensePoseChartResultWithConfidences,
    DensePoseEmbeddingPredictorOutput,
    DensePoseEmbeddingResult,
)
from .instances import Instances
from .shape_spec import ShapeSpec

__all__ = ["CONFIDENCE_NAMES", "DensePoseChartPredictorOutput", "DensePoseChartPredictorOutputWithConfidences",
           "DensePoseChartResult", "DensePoseChartResultWithConfidences",
           "DensePoseEmbeddingPredictorOutput", "DensePoseEmbeddingResult", "Instances", "ShapeSpec"]
