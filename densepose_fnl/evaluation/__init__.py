"""Evaluation: box AP and DensePose GPS / GPSm / IOU AP by the official COCO-DensePose protocol."""
from .densepose_coco_eval import (
    MODES,
    DensePoseCocoEval,
    densepose_metric_names,
    evaluate_boxes,
    evaluate_densepose,
)
from .eval_data import (
    EVAL_DATA_FILES,
    CondensedDistances,
    EvalDataMissingError,
    GeodesicEvalData,
    check_eval_data,
    condensed_index,
    convert_pdist_pickle,
    ensure_pdist_cache,
    resolve_eval_data_dir,
)
from .evaluator import DensePoseCOCOEvaluator, inference_on_dataset, load_coco
from .results_format import decode_iuv, decode_uv_data, encode_chart_result, encode_iuv, quantize_chart_result

__all__ = [
    "MODES",
    "EVAL_DATA_FILES",
    "CondensedDistances",
    "DensePoseCOCOEvaluator",
    "DensePoseCocoEval",
    "EvalDataMissingError",
    "GeodesicEvalData",
    "check_eval_data",
    "condensed_index",
    "convert_pdist_pickle",
    "decode_iuv",
    "decode_uv_data",
    "densepose_metric_names",
    "encode_chart_result",
    "encode_iuv",
    "ensure_pdist_cache",
    "evaluate_boxes",
    "evaluate_densepose",
    "inference_on_dataset",
    "load_coco",
    "quantize_chart_result",
    "resolve_eval_data_dir",
]
