"""ONNX Runtime Mobile files of an export: the ORT format model and the operator config of a reduced build.

`write_ort_mobile_files("DIR/model_int8.onnx")` writes, beside it:

* `DIR/model_int8.ort`: the graph in ORT format (flatbuffers; what a minimal / mobile ONNX Runtime build
  loads; a full build loads it too), optimised at conversion time for an ARM CPU;
* `DIR/model_int8.required_operators_and_types.config`: the operators (and, per operator, the data types)
  the .ort graph uses, for `build.sh --include_ops_by_config FILE [--enable_reduced_operator_type_support]`.

The conversion is onnxruntime's own (`onnxruntime.tools.convert_onnx_models_to_ort`, the function behind
`python -m onnxruntime.tools.convert_onnx_models_to_ort`), so the .ort and the config come from the ONNX
Runtime version installed here (onnxruntime 1.32.0 writes ORT format version 6): build or take the phone's
ONNX Runtime from the same release.
Choices, all the converter's own options:

* optimisation style "Fixed": every optimisation applied before saving (the converter's advice for CPU
  execution; "Runtime" style is for compiling EPs such as NNAPI / CoreML, which we do not target);
* target platform "arm": the x86-only NCHWc layout rewrite is left out (its blocked-layout nodes exist only
  in x86 builds) and int8 QDQ fusions are allowed as on ARM;
* type reduction on: the config lists per-operator types; a build without
  `--enable_reduced_operator_type_support` uses only its operator list.
"""
import contextlib
import io
import logging
import os
from typing import NamedTuple

logger = logging.getLogger(__name__)

__all__ = ["OrtMobileFiles", "ort_format_differences", "ort_mobile_paths", "write_ort_mobile_files"]

TARGET_PLATFORM = "arm"
CONFIG_SUFFIX = ".required_operators_and_types.config"


class OrtMobileFiles(NamedTuple):
    ort_path: str
    config_path: str


def ort_mobile_paths(onnx_path: str) -> OrtMobileFiles:
    """Where `write_ort_mobile_files(onnx_path)` writes (the converter's own naming, beside the .onnx)."""
    stem = os.path.splitext(onnx_path)[0]
    return OrtMobileFiles(stem + ".ort", stem + CONFIG_SUFFIX)


def write_ort_mobile_files(onnx_path: str) -> OrtMobileFiles:
    """Convert `onnx_path` (an .onnx export) to ORT format plus its reduced-build operator config, beside it."""
    import pathlib

    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    out = ort_mobile_paths(onnx_path)
    for stale in out:  # a failed conversion must not leave an older file looking like its result
        if os.path.exists(stale):
            os.remove(stale)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the converter reports on stdout; keep it in the log
        convert_onnx_models_to_ort(pathlib.Path(onnx_path), optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform=TARGET_PLATFORM, enable_type_reduction=True)
    for line in printed.getvalue().splitlines():
        logger.debug("convert_onnx_models_to_ort: %s", line)
    missing = [p for p in out if not os.path.isfile(p)]
    if missing:
        raise RuntimeError(f"onnxruntime's ORT format conversion of {onnx_path} did not write {', '.join(missing)}")
    return out


def ort_format_differences(onnx_path: str, ort_path: str, image) -> dict:
    """Run both files in ONNX Runtime (CPU) on `image` ((1, 3, H, W) uint8 network input) -> {output name:
    max |difference|}; a ValueError if their outputs differ in names or shapes (e.g. another detection count).

    Not zero for fp32 on x86: there the .onnx runs ONNX Runtime's NCHWc kernels, which the ARM-targeted .ort
    leaves out (float rounding); int8 sums are integer either way."""
    import numpy as np

    from .ort_predictor import make_session

    runs = []
    for path in (onnx_path, ort_path):
        sess = make_session(path, num_threads=1)
        names = [o.name for o in sess.get_outputs()]
        runs.append(dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: np.asarray(image)}))))
    a, b = runs
    if list(a) != list(b):
        raise ValueError(f"{ort_path}: outputs {list(b)}, {onnx_path}: {list(a)}")
    shapes = {k: (a[k].shape, b[k].shape) for k in a if a[k].shape != b[k].shape}
    if shapes:
        raise ValueError(f"{ort_path} and {onnx_path} give outputs of other shapes: {shapes}")
    return {k: float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) if a[k].size else 0.0
            for k in a}
