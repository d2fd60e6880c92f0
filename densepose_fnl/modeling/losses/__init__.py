"""DensePose losses, registered in DENSEPOSE_LOSS_REGISTRY by name (MODEL.ROI_DENSEPOSE_HEAD.LOSS_NAME).
Import this package before `build_model` when training (the engine does)."""
from .chart import LOSS_NAMES, DensePoseChartLoss
from .utils import PackedChartAnnotations, PointSampler, pack_chart_annotations, resample_segm

__all__ = ["LOSS_NAMES", "DensePoseChartLoss", "PackedChartAnnotations", "PointSampler",
           "pack_chart_annotations", "resample_segm"]
