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

CSE models (DensePoseEmbeddingPredictorOutput) give per person instead:

         {"mesh_name": str,                # the mesh of the predicted class
          "vertices": IntTensor (h, w),    # int32 closest mesh vertex (0-based), -1 = background
          "embedding": FloatTensor (D, S, S),    # the predictor's embedding map (box-relative, S x S)
          "coarse_segm": FloatTensor (K, S, S),  # its coarse segmentation logits
          # SMPL with the chart files (postprocess.cse.VertexChartMap): "labels", "uv" as above
         }

Back to densepose_fnl structures: DensePoseChartResult(labels=dp["labels"].long(), uv=dp["uv"]);
DensePoseEmbeddingResult(vertices=dp["vertices"].long(), mesh_name=dp["mesh_name"], ...).
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..structures import DensePoseChartPredictorOutput, DensePoseEmbeddingPredictorOutput, DensePoseEmbeddingResult
from .charts import densepose_chart_results


def extract_results(instances, min_score: Optional[float], cse=None) -> Tuple[torch.Tensor, torch.Tensor, List[Any]]:
    """Instances -> (boxes (N, 4) float, scores (N,), list of N per-person results) on the CPU, keeping
    the detections scoring at least `min_score` (all with None). Chart outputs give DensePoseChartResult;
    CSE outputs give DensePoseEmbeddingResult through `cse` (a `postprocess.cse.CseResultsConverter`),
    computed for the kept detections only."""
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
    classes = fields.get("pred_classes")
    keep = list(range(len(scores)))
    if min_score is not None:
        keep = [k for k in keep if float(scores[k]) >= min_score]
    if len(keep) != len(scores):
        idx = torch.tensor(keep, dtype=torch.long)
        boxes, scores = boxes[idx], scores[idx]
        dp = dp[idx] if isinstance(dp, (DensePoseChartPredictorOutput, DensePoseEmbeddingPredictorOutput)) else [
            dp[k] for k in keep]
        classes = None if classes is None else torch.as_tensor(classes)[idx]
    if isinstance(dp, DensePoseEmbeddingPredictorOutput):
        if cse is None:
            raise ValueError("CSE outputs (embeddings) need the mesh's vertex embeddings to become per-person "
                             "results: pass cse=CseResultsConverter(...) (densepose_fnl.postprocess.cse)")
        results = cse(boxes, dp.to("cpu"), None if classes is None else torch.as_tensor(classes).cpu())
    elif isinstance(dp, DensePoseChartPredictorOutput):
        results = densepose_chart_results(boxes, dp.to("cpu"))
    else:  # already per-person results
        results = [r.to("cpu") for r in dp]
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
    entry["pred_densepose"] = [_person_entry(r) for r in results]
    return entry


def _person_entry(r) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if isinstance(r, DensePoseEmbeddingResult):
        out["mesh_name"] = r.mesh_name
        out["vertices"] = r.vertices.to(torch.int32).clone()
        for name in ("embedding", "coarse_segm"):
            if getattr(r, name) is not None:
                out[name] = getattr(r, name).float().clone()
        if not r.has_charts:
            return out
    out["labels"] = r.labels.to(torch.uint8).clone()
    out["uv"] = r.uv.float().clone()
    out.update({name: c.float().clone() for name, c in r.confidences().items()})
    return out


def save_dump(entries: List[Dict[str, Any]], path: str) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(entries, path)


def load_dump(path: str) -> List[Dict[str, Any]]:
    """The entries of a dump file (plain tensors: read without running any pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)
