"""DensePose losses, registered in DENSEPOSE_LOSS_REGISTRY by name (MODEL.ROI_DENSEPOSE_HEAD.LOSS_NAME).
Import this package before `build_model` when training (the engine does)."""
from .chart import (
    CONFIDENCE_LOSS_NAMES,
    LOSS_NAMES,
    DensePoseChartLoss,
    DensePoseChartWithConfidenceLoss,
    iid_isotropic_gaussian_uv_nll,
    indep_anisotropic_gaussian_uv_nll,
)
from .cse import (
    EMBED_LOSS_NAMES,
    DensePoseCseLoss,
    EmbeddingLoss,
    PackedCseAnnotations,
    SoftEmbeddingLoss,
    pack_cse_annotations,
)
from .utils import PackedChartAnnotations, PointSampler, coarse_segm_loss, pack_chart_annotations, resample_segm

__all__ = ["CONFIDENCE_LOSS_NAMES", "LOSS_NAMES", "DensePoseChartLoss", "DensePoseChartWithConfidenceLoss",
           "iid_isotropic_gaussian_uv_nll", "indep_anisotropic_gaussian_uv_nll", "PackedChartAnnotations",
           "PointSampler", "pack_chart_annotations", "resample_segm", "coarse_segm_loss", "EMBED_LOSS_NAMES",
           "DensePoseCseLoss", "EmbeddingLoss", "SoftEmbeddingLoss", "PackedCseAnnotations", "pack_cse_annotations"]
