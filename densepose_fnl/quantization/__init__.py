"""Int8 quantization (torchao PT2E): QAT (`build_qat_model` -> train -> `convert_qat_model`) and PTQ."""
from .pt2e import (PART_NAMES, QuantizedModule, build_ptq_model, build_qat_model, convert_qat_model,
                   fold_frozen_batchnorm, quantized_parts)

__all__ = ["PART_NAMES", "QuantizedModule", "build_ptq_model", "build_qat_model", "convert_qat_model",
           "fold_frozen_batchnorm", "quantized_parts"]
