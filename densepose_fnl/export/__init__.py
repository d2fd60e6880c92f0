"""Deployment: tensor-only wrapper, ONNX export, ONNX Runtime predictor, output comparison."""
from .compare import ComparisonReport, compare_instances
from .onnx_export import export_onnx
from .ort_predictor import OrtPredictor, make_session
from .tensor_model import OUTPUT_NAMES, DensePoseTensorModel

__all__ = ["ComparisonReport", "DensePoseTensorModel", "OUTPUT_NAMES", "OrtPredictor", "compare_instances",
           "export_onnx", "make_session"]
