"""Scoring a results file (the challenge format) against a COCO-DensePose annotation file, as
`tools/evaluate_results.py` does; a file that is not valid JSON, or not of the expected shape, is a
`MalformedFileError` naming the file and the position."""
import os
from typing import Any, Callable, Dict, List, Optional, Union

from ..data.datasets.coco import check_coco_dict
from ..utils.json_io import MalformedFileError, read_json
from .densepose_coco_eval import evaluate_boxes, evaluate_densepose
from .eval_data import GeodesicEvalData, resolve_eval_data_dir
from .evaluator import load_coco

PathLike = Union[str, os.PathLike]
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def read_annotations(path: PathLike) -> Dict[str, Any]:
    return check_coco_dict(read_json(path, "annotation file"), str(path))


def read_results(path: PathLike) -> List[Dict[str, Any]]:
    data = read_json(path, "results file")
    if not isinstance(data, list):
        raise MalformedFileError(f"{path}: results file must hold a list of detections, found a "
                                 f"{type(data).__name__}")
    for k, r in enumerate(data):
        if not isinstance(r, dict) or any(key not in r for key in RESULT_KEYS):
            raise MalformedFileError(f"{path}: results[{k}] lacks one of {', '.join(RESULT_KEYS)}")
        if ("uv_data" in r) != ("uv_shape" in r):
            raise MalformedFileError(f"{path}: results[{k}] has only one of uv_data / uv_shape")
    return data


def evaluate_results_file(gt: PathLike, results: PathLike, eval_data: Optional[PathLike] = None,
                          min_iou_threshold: float = 0.5, cache_dir: Optional[PathLike] = None,
                          densepose: bool = True, print_fn: Callable = print) -> Dict[str, Dict[str, float]]:
    """{"bbox": box AP metrics, and with `densepose` "densepose_gps" / "densepose_gpsm" / "densepose_segm"}."""
    coco = load_coco(read_annotations(gt))
    predictions = read_results(results)
    out = {"bbox": evaluate_boxes(coco, predictions, print_fn=print_fn)}
    if densepose:
        geodesics = GeodesicEvalData(resolve_eval_data_dir(eval_data), cache_dir)
        out.update(evaluate_densepose(coco, predictions, geodesics, min_iou_threshold, print_fn=print_fn))
    return out
