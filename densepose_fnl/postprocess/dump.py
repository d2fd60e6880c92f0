"""The per-image results a model's output becomes (boxes, scores, chart results above a score) and the dump
format of `apply_net.py dump`: a list, written with `torch.save`, of one plain-tensor dict per image (per
frame for videos), readable with `torch.load(path, weights_only=True)` and no densepose_fnl:

    {"file_name": str,                     # the input path
     "frame_index": int,                   # videos only
     "image_size": (height, width),
     "scores": FloatTensor (N,),
     "pred_boxes_XYXY": FloatTensor (N, 4),   # image pixels
     "pred_densepose": [                   # one per person, over its box (int-truncated size h x w)
         {"labels": ByteTensor (h, w),     # 0 = background, 1..24 = body part I
          "uv": FloatTensor (2, h, w),     # U = uv[0], V = uv[1], in [0, 1]
          # models with chart confidences (WC1 / WC2 / WC1M / WC2M) add, each FloatTensor (h, w):
          #   "sigma_2" [, "kappa_u", "kappa_v"]: raw UV-confidence estimates of the pixel's part (0 on the
          #       background), as detectron2's DensePoseChartResultWithConfidences; the UV variance is
          #       softplus(sigma_2) + UV_CONFIDENCE.EPSILON (densepose_fnl.structures.densepose_outputs.uv_sigma);
          #   "fine_segm_confidence", "coarse_segm_confidence": softplus(.) + SEGM_CONFIDENCE.EPSILON, whole box
         },
         ...]}

Back to densepose_fnl structures: DensePoseChartResult(labels=dp["labels"].long(), uv=dp["uv"]).
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..structures import DensePoseChartPredictorOutput, DensePoseEmbeddingPredictorOutput
from .charts import densepose_chart_results


def extract_results(instances, min_score: Optional[float]) -> Tuple[torch.Tensor, torch.Tensor, List[Any]]:
    """Instances -> (boxes (N, 4) float, scores (N,), list of N DensePoseChartResult) on the CPU, keeping
    the detections scoring at least `min_score` (all with None)."""
    fields = instances.get_fields() if hasattr(instances, "get_fields") else {}
    boxes = fields.get("pred_boxes")
    if boxes is None:
        return torch.zeros(0, 4), torch.zeros(0), []
    boxes = getattr(boxes, "tensor", boxes)  # detectron2 Boxes or a plain tensor
    boxes = torch.as_tensor(boxes).detach().cpu().float().reshape(-1, 4)
    scores = fields.get("scores")
    scores = torch.ones(len(boxes)) if scores is None else torch.as_tensor(scores).detach().cpu().float().reshape(-1)
    dp = fields.get("pred_densepose")
    if dp is None:
        raise RuntimeError("the model output has no pred_densepose")
    if isinstance(dp, DensePoseEmbeddingPredictorOutput):
        raise NotImplementedError("per-person results of CSE models (embeddings -> mesh vertices) are not supported "
                                  "by apply_net dump / show yet; chart models are")
    if isinstance(dp, DensePoseChartPredictorOutput):
        results = densepose_chart_results(boxes, dp.to("cpu"))
    else:  # already per-person chart results
        results = [r.to("cpu") for r in dp]
    if min_score is not None:
        keep = [k for k in range(len(scores)) if float(scores[k]) >= min_score]
        if len(keep) != len(scores):
            idx = torch.tensor(keep, dtype=torch.long)
            boxes, scores, results = boxes[idx], scores[idx], [results[k] for k in keep]
    return boxes, scores, results


def dump_entry(file_name: str, image_size: Tuple[int, int], boxes: torch.Tensor, scores: torch.Tensor,
               results: List[Any], frame_index: Optional[int] = None) -> Dict[str, Any]:
    """One image's (or video frame's) dict of the dump format (see the module docstring)."""
    entry: Dict[str, Any] = {"file_name": file_name}
    if frame_index is not None:
        entry["frame_index"] = frame_index
    entry["image_size"] = (int(image_size[0]), int(image_size[1]))
    entry["scores"] = scores.clone()
    entry["pred_boxes_XYXY"] = boxes.clone()
    entry["pred_densepose"] = [
        {"labels": r.labels.to(torch.uint8).clone(), "uv": r.uv.float().clone(),
         **{name: c.float().clone() for name, c in r.confidences().items()}} for r in results
    ]
    return entry


def save_dump(entries: List[Dict[str, Any]], path: str) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(entries, path)


def load_dump(path: str) -> List[Dict[str, Any]]:
    """The entries of a dump file (plain tensors: read without running any pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)
