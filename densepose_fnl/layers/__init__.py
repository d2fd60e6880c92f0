from .batch_norm import FrozenBatchNorm2d, NaiveSyncBatchNorm, convert_norm, get_norm
from .nms import batched_nms
from .wrappers import Conv2d, c2_msra_fill, c2_xavier_fill

__all__ = [
    "Conv2d",
    "FrozenBatchNorm2d",
    "NaiveSyncBatchNorm",
    "batched_nms",
    "c2_msra_fill",
    "c2_xavier_fill",
    "convert_norm",
    "get_norm",
]
