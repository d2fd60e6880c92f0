"""Export-friendly batched NMS: one NMS call over class-offset boxes, no branch on the box count
(torchvision's batched_nms switches algorithms on `boxes.numel()`, which breaks dynamo export).

`max_keep` caps the number of kept boxes. In PyTorch that is `nms(...)[:max_keep]`; in ONNX the cap is
ONNX NonMaxSuppression's `max_output_boxes_per_class`, with which ONNX Runtime stops selecting once it
has `max_keep` boxes. Greedy NMS picks boxes in decreasing score order, so the first `max_keep` kept
boxes are the same either way, while the runtime does a fraction of the work (the RPN keeps 1000 of
~4000 candidates, the test-tuned RPN 100): `nms_top_k` is a custom op so the exporter can emit the cap
(`export.onnx_export` translates it).
"""
import torch
from torchvision.ops import nms


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
                max_keep: int = -1) -> torch.Tensor:
    """Indices of the kept boxes, in decreasing score order; boxes of different `idxs` never suppress
    each other. `max_keep >= 0` keeps at most that many (the first ones)."""
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # also fine when empty
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    if max_keep < 0:
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    return nms_top_k(boxes + offsets[:, None], scores, float(iou_threshold), int(max_keep))
