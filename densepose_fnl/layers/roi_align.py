"""torchvision's RoIAlign, with the RoIs of one call shared out over torch's intra-op threads in eager
inference (`eager_threads`): with adaptive sampling (POOLER_SAMPLING_RATIO 0) the 1000 proposals of the box
head were ~30 % of eager inference on one thread. Each RoI is computed on its own, so splitting them gives
the same values bit for bit."""
from typing import Tuple

import torch
from torchvision.ops import roi_align

from .eager_threads import eager_cpu_threads, run_in_parallel

# fewer RoIs than this per thread: not worth a hand-off
MIN_ROIS_PER_THREAD = 32


def threaded_roi_align(x: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int], spatial_scale: float,
                       sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """`torchvision.ops.roi_align(x, rois, ...)` for (R, 5) rois; equal to it bit for bit."""
    threads = eager_cpu_threads(x, rois)  # first: 1 in a traced graph, where the RoI count is symbolic
    parts = 1 if threads < 2 else min(threads, int(rois.shape[0]) // MIN_ROIS_PER_THREAD)
    if parts < 2:
        return roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
    x = x.contiguous()  # the kernel's own layout, made once rather than by every part
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    return torch.cat(run_in_parallel(roi_align, [(x, c) + args for c in torch.tensor_split(rois, parts)]))
