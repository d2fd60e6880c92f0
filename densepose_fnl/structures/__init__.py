from .densepose import DensePoseChartPredictorOutput, DensePoseChartResult
from .instances import Instances
from .shape_spec import ShapeSpec

__all__ = ["DensePoseChartPredictorOutput", "DensePoseChartResult", "Instances", "ShapeSpec"]
