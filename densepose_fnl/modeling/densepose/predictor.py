"""Chart predictor: transposed convs (stride 2) to coarse segmentation, fine segmentation, U and V, then
bilinear up-sampling by UP_SCALE (detectron2 DensePose's DensePoseChartPredictor), optionally with chart
confidences (detectron2's DensePoseChartWithConfidencePredictor, the WC1 / WC2 / WC1M / WC2M models):

* UV confidence (`MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE`, Neverova et al., NeurIPS 2019): `sigma_2_lowres`
  (TYPE iid_iso), plus `kappa_u_lowres` and `kappa_v_lowres` (TYPE indep_aniso), NUM_PATCHES + 1 channels
  each, up-sampled like U / V and output raw: the loss turns sigma_2 into the variance
  softplus(sigma_2) + UV_CONFIDENCE.EPSILON;
* segmentation confidence (`SEGM_CONFIDENCE`, Sanakoyeu et al., CVPR 2020): `fine_segm_confidence_lowres`
  and `coarse_segm_confidence_lowres`, one channel each, c = softplus(up-sampled) + SEGM_CONFIDENCE.EPSILON;
  the fine / coarse segmentation logits are multiplied by their c (a temperature per pixel), as detectron2.

The CSE predictor (detectron2's DensePoseEmbeddingPredictor) has the same structure with two transposed
convs, `coarse_segm_lowres` (NUM_COARSE_SEGM_CHANNELS) and `embed_lowres` (CSE.EMBED_SIZE), up-sampled alike:
per-pixel embeddings and coarse segmentation (DensePoseEmbeddingPredictorOutput); the mesh vertices come
from the model's `roi_heads.embedder`.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ...structures import DensePoseChartPredictorOutput, DensePoseEmbeddingPredictorOutput
from ...structures.densepose_outputs import CHART_NAMES, EMBEDDING_NAMES
from ..registry import DENSEPOSE_PREDICTOR_REGISTRY, get_from_registry

UV_CONFIDENCE_TYPES = ("iid_iso", "indep_aniso")


def uv_confidence_names(uv_confidence: Optional[str]) -> Tuple[str, ...]:
    """The UV-confidence outputs of a UV_CONFIDENCE.TYPE (none for None)."""
    if uv_confidence is None:
        return ()
    if uv_confidence == "iid_iso":
        return ("sigma_2",)
    if uv_confidence == "indep_aniso":
        return ("sigma_2", "kappa_u", "kappa_v")
    raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE must be one of {UV_CONFIDENCE_TYPES}, "
                     f"got {uv_confidence!r}")


def _deconv(input_channels: int, out_channels: int, kernel: int) -> nn.ConvTranspose2d:
    """The predictors' stride-2 transposed conv (detectron2's: padding kernel / 2 - 1 doubles the size)."""
    return nn.ConvTranspose2d(input_channels, out_channels, kernel, stride=2, padding=int(kernel / 2 - 1))


def _init_deconvs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)


def _upsample(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Bilinear up-sampling by UP_SCALE (align_corners False, as detectron2)."""
    if scale_factor == 1:  # identity: skip the op (same numbers as interpolating by 1)
        return x
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


def _reject_confidences(cfg, name: str, instead: str) -> None:
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    if h.UV_CONFIDENCE.ENABLED or h.SEGM_CONFIDENCE.ENABLED:
        raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME '{name}' has no confidence layers (as in "
                         f"detectron2) but UV_CONFIDENCE / SEGM_CONFIDENCE is enabled: {instead}")


class DensePoseChartPredictor(nn.Module):
    def __init__(self, input_channels: int, num_coarse_segm_channels: int = 2, num_patches: int = 24,
                 deconv_kernel: int = 4, up_scale: int = 2, *, uv_confidence: Optional[str] = None,
                 uv_confidence_epsilon: float = 0.01, segm_confidence: bool = False,
                 segm_confidence_epsilon: float = 0.01):
        super().__init__()

        def deconv(out_channels: int) -> nn.ConvTranspose2d:
            return _deconv(input_channels, out_channels, deconv_kernel)

        self.ann_index_lowres = deconv(num_coarse_segm_channels)
        self.index_uv_lowres = deconv(num_patches + 1)
        self.u_lowres = deconv(num_patches + 1)
        self.v_lowres = deconv(num_patches + 1)
        self.uv_confidence = uv_confidence
        self.uv_confidence_epsilon = float(uv_confidence_epsilon)
        self.segm_confidence = bool(segm_confidence)
        self.segm_confidence_epsilon = float(segm_confidence_epsilon)
        uv_names = uv_confidence_names(uv_confidence)
        for name in uv_names:  # the authors' / detectron2's names and order
            self.add_module(f"{name}_lowres", deconv(num_patches + 1))
        if self.segm_confidence:
            self.fine_segm_confidence_lowres = deconv(1)
            self.coarse_segm_confidence_lowres = deconv(1)
        # the names of `forward_tensors`' outputs, in order
        self.output_names = CHART_NAMES + uv_names + (
            ("fine_segm_confidence", "coarse_segm_confidence") if self.segm_confidence else ())
        self.scale_factor = up_scale
        _init_deconvs(self)

    @property
    def has_confidences(self) -> bool:
        return len(self.output_names) > len(CHART_NAMES)

    @classmethod
    def _base_kwargs(cls, cfg) -> dict:
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        if h.NUM_COARSE_SEGM_CHANNELS not in (2, 15):
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS must be 2 or 15, "
                             f"got {h.NUM_COARSE_SEGM_CHANNELS}")
        return dict(num_coarse_segm_channels=h.NUM_COARSE_SEGM_CHANNELS, num_patches=h.NUM_PATCHES,
                    deconv_kernel=h.DECONV_KERNEL, up_scale=h.UP_SCALE)

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseChartPredictor":
        _reject_confidences(cfg, "DensePoseChartPredictor", "use 'DensePoseChartWithConfidencePredictor' (the default)")
        return cls(input_channels, **cls._base_kwargs(cfg))

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(x, self.scale_factor)

    def forward_tensors(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The maps named by `output_names`, each (N, C, HEATMAP_SIZE, HEATMAP_SIZE): coarse_segm, fine_segm,
        u, v, then the enabled confidences (sigma_2 [, kappa_u, kappa_v] [, fine_segm_confidence,
        coarse_segm_confidence])."""
        coarse_segm = self._upsample(self.ann_index_lowres(x))
        fine_segm = self._upsample(self.index_uv_lowres(x))
        out = [self._upsample(self.u_lowres(x)), self._upsample(self.v_lowres(x))]
        for name in self.output_names[len(CHART_NAMES):]:
            if name in ("sigma_2", "kappa_u", "kappa_v"):
                out.append(self._upsample(getattr(self, f"{name}_lowres")(x)))
        if self.segm_confidence:
            eps = self.segm_confidence_epsilon
            fine_conf = F.softplus(self._upsample(self.fine_segm_confidence_lowres(x))) + eps
            coarse_conf = F.softplus(self._upsample(self.coarse_segm_confidence_lowres(x))) + eps
            # detectron2 multiplies by the confidence repeated over the channels: the same products
            fine_segm = fine_segm * fine_conf
            coarse_segm = coarse_segm * coarse_conf
            out += [fine_conf, coarse_conf]
        return (coarse_segm, fine_segm, *out)

    def make_output(self, tensors) -> DensePoseChartPredictorOutput:
        """The output structure of `forward_tensors`' tuple (with confidences if the predictor has any)."""
        return DensePoseChartPredictorOutput.from_tensors(self.output_names, tuple(tensors))

    def forward(self, x: torch.Tensor) -> DensePoseChartPredictorOutput:
        return self.make_output(self.forward_tensors(x))


class DensePoseChartWithConfidencePredictor(DensePoseChartPredictor):
    """detectron2's default predictor name: the chart predictor with the confidences the config enables
    (none: exactly DensePoseChartPredictor)."""

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseChartWithConfidencePredictor":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        kwargs = cls._base_kwargs(cfg)
        if h.UV_CONFIDENCE.ENABLED:
            if h.UV_CONFIDENCE.TYPE not in UV_CONFIDENCE_TYPES:
                raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE must be one of {UV_CONFIDENCE_TYPES}, "
                                 f"got {h.UV_CONFIDENCE.TYPE!r}")
            kwargs.update(uv_confidence=h.UV_CONFIDENCE.TYPE, uv_confidence_epsilon=h.UV_CONFIDENCE.EPSILON)
        if h.SEGM_CONFIDENCE.ENABLED:
            kwargs.update(segm_confidence=True, segm_confidence_epsilon=h.SEGM_CONFIDENCE.EPSILON)
        return cls(input_channels, **kwargs)


class DensePoseEmbeddingPredictor(nn.Module):
    """CSE predictor (detectron2's DensePoseEmbeddingPredictor): `coarse_segm_lowres` and `embed_lowres`
    transposed convs (stride 2), each up-sampled bilinearly by UP_SCALE. Outputs `embedding` (N, EMBED_SIZE,
    S, S), not normalised, and `coarse_segm` (N, NUM_COARSE_SEGM_CHANNELS, S, S) logits."""

    def __init__(self, input_channels: int, num_coarse_segm_channels: int = 2, embed_size: int = 16,
                 deconv_kernel: int = 4, up_scale: int = 2):
        super().__init__()
        self.coarse_segm_lowres = _deconv(input_channels, num_coarse_segm_channels, deconv_kernel)
        self.embed_lowres = _deconv(input_channels, embed_size, deconv_kernel)
        self.scale_factor = up_scale
        self.output_names = EMBEDDING_NAMES  # of `forward_tensors`' outputs, in order
        _init_deconvs(self)

    @classmethod
    def from_config(cls, cfg, input_channels: int) -> "DensePoseEmbeddingPredictor":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        _reject_confidences(cfg, "DensePoseEmbeddingPredictor",
                            "CSE confidences (DensePoseEmbeddingWithConfidencePredictor) are not supported yet")
        if h.NUM_COARSE_SEGM_CHANNELS < 2:
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS must be >= 2 (background + body), "
                             f"got {h.NUM_COARSE_SEGM_CHANNELS}")
        return cls(input_channels, h.NUM_COARSE_SEGM_CHANNELS, h.CSE.EMBED_SIZE, h.DECONV_KERNEL, h.UP_SCALE)

    def forward_tensors(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(embedding, coarse_segm), each (N, C, HEATMAP_SIZE, HEATMAP_SIZE) (`output_names`)."""
        return (_upsample(self.embed_lowres(x), self.scale_factor),
                _upsample(self.coarse_segm_lowres(x), self.scale_factor))

    def make_output(self, tensors) -> DensePoseEmbeddingPredictorOutput:
        return DensePoseEmbeddingPredictorOutput(**dict(zip(self.output_names, tensors)))

    def forward(self, x: torch.Tensor) -> DensePoseEmbeddingPredictorOutput:
        return self.make_output(self.forward_tensors(x))


DENSEPOSE_PREDICTOR_REGISTRY.register(DensePoseChartPredictor)
DENSEPOSE_PREDICTOR_REGISTRY.register(DensePoseChartWithConfidencePredictor)
DENSEPOSE_PREDICTOR_REGISTRY.register(DensePoseEmbeddingPredictor)

# detectron2's CSE predictors with confidences (Sanakoyeu et al.'s coarse segmentation confidence for CSE)
_NOT_SUPPORTED = ("DensePoseEmbeddingWithConfidencePredictor", "DensePoseEmbeddingConfidencePredictor")


def build_densepose_predictor(cfg, input_channels: int) -> nn.Module:
    name = cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME
    if name in _NOT_SUPPORTED:
        raise NotImplementedError(
            f"MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME '{name}': CSE predictors with confidences are not "
            "supported yet; DensePoseEmbeddingPredictor (CSE) and the chart predictors are")
    return get_from_registry(DENSEPOSE_PREDICTOR_REGISTRY, name, "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME"
                             ).from_config(cfg, input_channels)
