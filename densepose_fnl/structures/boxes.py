"""Tensor-only box helpers (XYXY, absolute pixels)."""
import torch


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clamp (N, 4) XYXY boxes to [0, width] x [0, height]; height/width may be ints or 0-d tensors."""
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    return torch.stack((x0.clamp(min=0, max=width), y0.clamp(min=0, max=height),
                        x1.clamp(min=0, max=width), y1.clamp(min=0, max=height)), dim=1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Boolean mask of boxes whose width and height both exceed `threshold`."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)
