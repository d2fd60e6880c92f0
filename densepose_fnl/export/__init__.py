"""Deployment: tensor-only wrapper, ONNX export, ONNX Runtime predictor and model, output comparison."""
from .build import build_export_model, is_qat_checkpoint
from .compare import ComparisonReport, compare_instances
from .onnx_export import export_onnx
from .ort_model import OrtModel, OrtModelError, is_pytorch_checkpoint, open_ort_predictor
from .ort_mobile import OrtMobileFiles, ort_format_differences, ort_mobile_paths, write_ort_mobile_files
from .ort_predictor import OrtPredictor, OrtProviderError, make_session, resolve_provider
from .tensor_model import OUTPUT_NAMES, DensePoseTensorModel

__all__ = ["ComparisonReport", "DensePoseTensorModel", "OUTPUT_NAMES", "OrtMobileFiles", "OrtModel", "OrtModelError",
           "OrtPredictor", "OrtProviderError", "build_export_model", "compare_instances", "is_qat_checkpoint",
           "export_onnx", "is_pytorch_checkpoint", "make_session", "open_ort_predictor", "ort_format_differences", "ort_mobile_paths",
           "resolve_provider", "write_ort_mobile_files"]
