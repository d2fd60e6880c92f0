"""Raw chart predictor outputs (fixed-size maps per RoI) -> per-person results over each box.

Semantics follow detectron2 DensePose (`converters/chart_output_to_chart_result.py`): the box is
XYWH truncated to integers (w, h at least 1), maps are resized to (h, w) bilinearly
(align_corners=False), the part label is argmax of the fine segmentation where argmax of the coarse
segmentation is foreground (> 0), and U, V are read from the channel of that part.
Confidences (`densepose_chart_predictor_output_to_result_with_confidences`) are resized the same way;
a per-part one (sigma_2, kappa_u, kappa_v: as many channels as U) is read from the channel of the
pixel's part and is 0 on the background, a one-channel one (segmentation confidences) is kept over the
whole box.
"""
from typing import Dict, List, Tuple

import torch
from torch.nn import functional as F

from ..structures import (
    CONFIDENCE_NAMES,
    DensePoseChartPredictorOutput,
    DensePoseChartPredictorOutputWithConfidences,
    DensePoseChartResult,
    DensePoseChartResultWithConfidences,
)


def int_box_xywh(box_xyxy: torch.Tensor) -> Tuple[int, int, int, int]:
    """XYXY float box -> XYWH ints by truncation, as detectron2's `make_int_box`."""
    xywh = box_xyxy.clone()
    xywh[2:] -= xywh[:2]  # in the box's own dtype (float32), as detectron2 does, before truncating
    x, y, w, h = xywh.long().tolist()
    return x, y, w, h


def _resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(t[None].float(), (h, w), mode="bilinear", align_corners=False)[0]


def chart_labels_and_uv(
    coarse_segm: torch.Tensor, fine_segm: torch.Tensor, u: torch.Tensor, v: torch.Tensor, h: int, w: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One RoI's maps ([C, S, S] each) resized to (h, w): labels [h, w] long and uv [2, h, w] float."""
    h, w = max(int(h), 1), max(int(w), 1)
    foreground = _resize(coarse_segm, h, w).argmax(dim=0) > 0
    labels = _resize(fine_segm, h, w).argmax(dim=0) * foreground.long()
    index = labels[None]
    uv = torch.cat([_resize(u, h, w).gather(0, index), _resize(v, h, w).gather(0, index)], dim=0)
    uv = uv * (labels > 0)[None].to(uv.dtype)  # background stays exactly 0
    return labels, uv


def chart_confidences(confidences: Dict[str, torch.Tensor], labels: torch.Tensor, num_part_channels: int
                      ) -> Dict[str, torch.Tensor]:
    """One RoI's confidence maps ([C, S, S] each) over its (h, w) box given its labels [h, w]: [h, w] each."""
    h, w = labels.shape
    out = {}
    for name, t in confidences.items():
        r = _resize(t, h, w)
        if r.shape[0] == num_part_channels:
            out[name] = r.gather(0, labels[None])[0] * (labels > 0).to(r.dtype)
        else:  # not part-based (one channel): detectron2 keeps its first channel over the whole box
            out[name] = r[0]
    return out


def densepose_chart_results(
    boxes_xyxy: torch.Tensor, output: DensePoseChartPredictorOutput
) -> List[DensePoseChartResult]:
    """Per-person results for N boxes (N, 4) XYXY and their N predictor outputs (with confidences:
    `DensePoseChartResultWithConfidences`)."""
    if len(boxes_xyxy) != len(output):
        raise ValueError(f"{len(boxes_xyxy)} boxes but {len(output)} DensePose outputs")
    names = [n for n in CONFIDENCE_NAMES if getattr(output, n, None) is not None]
    results = []
    for k in range(len(boxes_xyxy)):
        _, _, w, h = int_box_xywh(boxes_xyxy[k])
        labels, uv = chart_labels_and_uv(output.coarse_segm[k], output.fine_segm[k], output.u[k], output.v[k], h, w)
        if not names and not isinstance(output, DensePoseChartPredictorOutputWithConfidences):
            results.append(DensePoseChartResult(labels=labels, uv=uv))
            continue
        conf = chart_confidences({n: getattr(output, n)[k] for n in names}, labels, output.u.shape[1])
        results.append(DensePoseChartResultWithConfidences(labels=labels, uv=uv, **conf))
    return results
