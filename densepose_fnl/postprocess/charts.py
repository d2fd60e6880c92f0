"""Raw chart predictor outputs (fixed-size maps per RoI) -> per-person results over each box.

Semantics follow detectron2 DensePose (`converters/chart_output_to_chart_result.py`): the box is
XYWH truncated to integers (w, h at least 1), maps are resized to (h, w) bilinearly
(align_corners=False), the part label is argmax of the fine segmentation where argmax of the coarse
segmentation is foreground (> 0), and U, V are read from the channel of that part.
"""
from typing import List, Tuple

import torch
from torch.nn import functional as F

from ..structures import DensePoseChartPredictorOutput, DensePoseChartResult


def int_box_xywh(box_xyxy: torch.Tensor) -> Tuple[int, int, int, int]:
    """XYXY float box -> XYWH ints by truncation, as detectron2's `make_int_box`."""
    xywh = box_xyxy.clone()
    xywh[2:] -= xywh[:2]  # in the box's own dtype (float32), as detectron2 does, before truncating
    x, y, w, h = xywh.long().tolist()
    return x, y, w, h


def chart_labels_and_uv(
    coarse_segm: torch.Tensor, fine_segm: torch.Tensor, u: torch.Tensor, v: torch.Tensor, h: int, w: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One RoI's maps ([C, S, S] each) resized to (h, w): labels [h, w] long and uv [2, h, w] float."""
    h, w = max(int(h), 1), max(int(w), 1)

    def resize(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None].float(), (h, w), mode="bilinear", align_corners=False)[0]

    foreground = resize(coarse_segm).argmax(dim=0) > 0
    labels = resize(fine_segm).argmax(dim=0) * foreground.long()
    index = labels[None]
    uv = torch.cat([resize(u).gather(0, index), resize(v).gather(0, index)], dim=0)
    uv = uv * (labels > 0)[None].to(uv.dtype)  # background stays exactly 0
    return labels, uv


def densepose_chart_results(
    boxes_xyxy: torch.Tensor, output: DensePoseChartPredictorOutput
) -> List[DensePoseChartResult]:
    """Per-person results for N boxes (N, 4) XYXY and their N predictor outputs."""
    if len(boxes_xyxy) != len(output):
        raise ValueError(f"{len(boxes_xyxy)} boxes but {len(output)} DensePose outputs")
    results = []
    for k in range(len(boxes_xyxy)):
        _, _, w, h = int_box_xywh(boxes_xyxy[k])
        labels, uv = chart_labels_and_uv(output.coarse_segm[k], output.fine_segm[k], output.u[k], output.v[k], h, w)
        results.append(DensePoseChartResult(labels=labels, uv=uv))
    return results
