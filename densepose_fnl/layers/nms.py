"""Export-friendly batched NMS: one NMS call over class-offset boxes, no branch on the box count
(torchvision's batched_nms switches algorithms on `boxes.numel()`, which breaks dynamo export)."""
import torch
from torchvision.ops import nms


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes, in decreasing score order; boxes of different `idxs` never suppress
    each other."""
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()  # also fine when empty
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
