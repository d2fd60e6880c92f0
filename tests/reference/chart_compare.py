"""Per-person chart results (labels, U, V, confidences over the box) compared with the oracle's.

Labels are argmaxes of bilinearly resized maps that agree with the oracle's to `atol`, and two float
implementations (or two CPUs' kernels) may round differently: a pixel whose two best scores are within
2 x atol is a tie and may take either label. Every other pixel must have the oracle's label, ties must stay
rare, and U, V and per-part confidences are compared where the labels agree (one-channel segmentation
confidences everywhere).
"""
import torch
from torch.nn import functional as F

from densepose_fnl.postprocess.charts import int_box_xywh

MAX_TIE_FRACTION = 1e-3  # of the box's pixels


def _resized(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(t[None].float(), (h, w), mode="bilinear", align_corners=False)[0]


def _top2_margin(scores: torch.Tensor) -> torch.Tensor:
    top2 = scores.topk(2, dim=0).values
    return top2[0] - top2[1]


def tie_pixels(box_xyxy, coarse_segm, fine_segm, coarse_atol: float, fine_atol: float) -> torch.Tensor:
    """[h, w] bool: where the foreground decision or the part argmax is within float noise of flipping."""
    _, _, w, h = int_box_xywh(box_xyxy)
    h, w = max(h, 1), max(w, 1)
    coarse = _resized(coarse_segm, h, w)
    foreground_margin = (coarse[0] - coarse[1:].max(dim=0).values).abs()
    return (foreground_margin <= 2 * coarse_atol) | (_top2_margin(_resized(fine_segm, h, w)) <= 2 * fine_atol)


def assert_same_chart(msg: str, ours, labels, uv, ties: torch.Tensor, confidences=None, atol: float = 1e-4):
    """`ours` (a chart result) against the oracle's `labels` [h, w], `uv` [2, h, w] and `confidences`
    {name: [h, w]}; `ties` from `tie_pixels`."""
    assert ours.labels.shape == labels.shape == ties.shape, msg
    differ = ours.labels.long() != labels.long()
    assert not (differ & ~ties).any(), f"{msg}: labels differ at {int((differ & ~ties).sum())} pixels that are no tie"
    assert int(differ.sum()) <= MAX_TIE_FRACTION * differ.numel() + 1, f"{msg}: {int(differ.sum())} tied pixels differ"
    agree = ~differ
    torch.testing.assert_close(ours.uv[:, agree], uv.float()[:, agree], atol=atol, rtol=0, msg=f"{msg} uv")
    for name, theirs in (confidences or {}).items():
        mine = getattr(ours, name)
        where = slice(None) if "segm" in name else agree  # one-channel confidences cover the whole box
        torch.testing.assert_close(mine[where], theirs.float()[where], atol=atol, rtol=0, msg=f"{msg} {name}")
