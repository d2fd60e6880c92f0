"""Tensor-only box helpers (XYXY, absolute pixels)."""
import torch


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clamp (N, 4) XYXY boxes to [0, width] x [0, height]; height / width are ints or 0-d tensors (symbolic
    in an exported graph, where `clamp` takes no tensor bound: hence minimum / maximum, same values)."""
    zero = boxes.new_zeros(())
    h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    return torch.stack((torch.minimum(torch.maximum(x0, zero), w), torch.minimum(torch.maximum(y0, zero), h),
                        torch.minimum(torch.maximum(x1, zero), w), torch.minimum(torch.maximum(y1, zero), h)), dim=1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Boolean mask of boxes whose width and height both exceed `threshold`."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)
