"""Batched NMS. Training and traced / exported graphs: one NMS call over class-offset boxes, no branch on the
box count (torchvision's batched_nms switches algorithms on `boxes.numel()`, which breaks dynamo export).
Eager inference (`split_groups`): one NMS per group, the groups shared over torch's intra-op threads
(`eager_threads`): the RPN's ~4000 candidates in 5 levels cost ~5x fewer box pairs so (~1000^2 per level
instead of ~4000^2 over all), and it is what detectron2 itself does on the CPU (torchvision's per-class
loop above 4000 numbers).

`max_keep` caps the number of kept boxes. In PyTorch that is `nms(...)[:max_keep]`; in ONNX the cap is
ONNX NonMaxSuppression's `max_output_boxes_per_class`, with which ONNX Runtime stops selecting once it
has `max_keep` boxes. Greedy NMS picks boxes in decreasing score order, so the first `max_keep` kept
boxes are the same either way, while the runtime does a fraction of the work (the RPN keeps 1000 of
~4000 candidates, the test-tuned RPN 100): `nms_top_k` is a custom op so the exporter can emit the cap
(`export.onnx_export` translates it).
"""
from typing import List

import torch
from torchvision.ops import nms

from .eager_threads import eager_cpu_threads, run_in_parallel


@torch.library.custom_op("densepose_fnl::nms_top_k", mutates_args=())
def nms_top_k(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int) -> torch.Tensor:
    """Indices of the first `max_keep` boxes kept by greedy NMS, in decreasing score order."""
    return nms(boxes, scores, iou_threshold)[:max_keep].clone()


@nms_top_k.register_fake
def _nms_top_k_fake(boxes, scores, iou_threshold, max_keep):
    # data-dependent length: an unbacked size (as torchvision's own nms meta kernel), known to be <= max_keep
    # (graphs downstream, e.g. the int8 heads captured for <= 4096 RoIs, check that bound)
    ctx = torch.library.get_ctx()
    n = ctx.new_dynamic_size(max=max_keep) if max_keep >= 0 else ctx.new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                max_keep: int = -1, split_groups: bool = False) -> torch.Tensor:
    """Indices of the kept boxes, in decreasing score order (ties: lower index first); boxes of different
    `idxs` never suppress each other. `max_keep >= 0` keeps at most that many (the first ones).
    `split_groups`: in eager CPU inference, one NMS per group on the intra-op threads (the kept boxes are the
    same up to the float rounding of the offsets; callers pass it for inference only, so training keeps its
    numbers)."""
    threads = eager_cpu_threads(boxes, scores) if split_groups else 1
    if threads > 1:
        keep = _nms_per_group(boxes, scores, idxs, iou_threshold, threads)
        return keep if max_keep < 0 else keep[:max_keep]
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # also fine when empty
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    if max_keep < 0:
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    return nms_top_k(boxes + offsets[:, None], scores, float(iou_threshold), int(max_keep))


def _nms_per_group(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                   threads: int) -> torch.Tensor:
    """`batched_nms` as one `nms` per value of `idxs`, the groups split over `threads` threads by their cost
    (~ size^2, largest first to the least loaded). Merged in decreasing score order, ties by index (the
    order of torchvision's stable sort in the single call)."""
    groups = [(idxs == g).nonzero()[:, 0] for g in torch.unique(idxs)]
    if not groups:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    bins: List[List[torch.Tensor]] = [[] for _ in range(min(threads, len(groups)))]
    load = [0] * len(bins)
    for g in sorted(groups, key=len, reverse=True):
        b = load.index(min(load))
        bins[b].append(g)
        load[b] += len(g) ** 2

    def run(members: List[torch.Tensor]) -> List[torch.Tensor]:
        return [g[nms(boxes[g], scores[g], iou_threshold)] for g in members]

    keep = torch.cat([k for part in run_in_parallel(run, [(b,) for b in bins]) for k in part]).sort().values
    return keep[scores[keep].argsort(descending=True, stable=True)]
