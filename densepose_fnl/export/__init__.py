"""Deployment: tensor-only wrapper, ONNX export, ONNX Runtime predictor and model, output comparison."""
from .build import build_export_model, is_qat_checkpoint
from .compare import ComparisonReport, compare_instances
from .onnx_export import export_onnx
from .ort_model import OrtModel, OrtModelError, is_pytorch_checkpoint, open_ort_predictor
from .ort_predictor import OrtPredictor, make_session
from .tensor_model import OUTPUT_NAMES, DensePoseTensorModel

__all__ = ["ComparisonReport", "DensePoseTensorModel", "OUTPUT_NAMES", "OrtModel", "OrtModelError", "OrtPredictor",
           "build_export_model", "compare_instances", "is_qat_checkpoint", "export_onnx", "is_pytorch_checkpoint", "make_session", "open_ort_predictor"]
