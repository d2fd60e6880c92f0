"""Chart-based DensePose losses (DensePose R-CNN; detectron2's `DensePoseChartLoss`).

* loss_densepose_S: cross-entropy of the coarse segmentation (2 channels: person / background, or 15:
  background + 14 coarse parts) against the 256 x 256 GT labels resampled onto the proposal box
  (nearest), mean over the S x S cells of the instances with DensePose; weight INDEX_WEIGHTS;
* loss_densepose_I: cross-entropy of the 25 fine-part logits sampled bilinearly at the annotated points
  inside the proposal, mean over those points; weight PART_WEIGHTS;
* loss_densepose_U / _V: smooth-L1 (beta 1) between U / V of the point's true part channel, sampled
  bilinearly, and the annotated value, SUMMED over the foreground points inside the proposal; weight
  POINT_REGRESSION_WEIGHTS.

With UV confidences (`DensePoseChartWithConfidenceLoss`, UV_CONFIDENCE.ENABLED; detectron2's loss of the
same name) U and V are one term instead:
* loss_densepose_UV: the Gaussian negative log-likelihood of the annotated (U, V) of each foreground
  point, SUMMED over the points, weight POINT_REGRESSION_WEIGHTS, with the variance
  sigma^2 = softplus(sigma_2) + UV_CONFIDENCE.EPSILON of the point's true part channel:
  - iid_iso: 1/2 (log 2pi + 2 log sigma^2 + |d|^2 / sigma^2), d = (u - u_gt, v - v_gt);
  - indep_aniso (covariance sigma^2 I + r r^T, r = (kappa_u, kappa_v)):
    1/2 (log 2pi + log(sigma^2 (sigma^2 + |r|^2)) + |d|^2 / sigma^2 - <d, r>^2 / (sigma^2 (sigma^2 + |r|^2))).
Segmentation confidences change no formula: S and I are the same cross-entropies of the predictor's
fine / coarse logits, which it has already multiplied by their confidences.

With no usable point in the batch all terms are `output.sum() * 0` (UV: of u, v and the UV confidences),
so every predictor parameter still takes part in the graph (DistributedDataParallel needs the same graph
on every rank).
"""
import math
from typing import Any, Dict, List, Optional

import torch
from torch.nn import functional as F

from ...structures import Instances
from ..registry import DENSEPOSE_LOSS_REGISTRY
from .utils import PointSampler, coarse_segm_loss, pack_chart_annotations

LOSS_NAMES = ("loss_densepose_S", "loss_densepose_I", "loss_densepose_U", "loss_densepose_V")
CONFIDENCE_LOSS_NAMES = ("loss_densepose_S", "loss_densepose_I", "loss_densepose_UV")
_LOG_2PI = math.log(2 * math.pi)


def iid_isotropic_gaussian_uv_nll(u: torch.Tensor, v: torch.Tensor, sigma_2: torch.Tensor, u_gt: torch.Tensor,
                                  v_gt: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Summed NLL of (u_gt, v_gt) under N((u, v), s I), s = softplus(sigma_2) + epsilon (all (K,))."""
    var = F.softplus(sigma_2) + epsilon
    d2 = (u - u_gt) ** 2 + (v - v_gt) ** 2
    return (0.5 * (_LOG_2PI + 2 * torch.log(var) + d2 / var)).sum()


def indep_anisotropic_gaussian_uv_nll(u: torch.Tensor, v: torch.Tensor, sigma_2: torch.Tensor, kappa_u: torch.Tensor,
                                      kappa_v: torch.Tensor, u_gt: torch.Tensor, v_gt: torch.Tensor,
                                      epsilon: float) -> torch.Tensor:
    """Summed NLL of (u_gt, v_gt) under N((u, v), s I + r r^T), s = softplus(sigma_2) + epsilon,
    r = (kappa_u, kappa_v) (all (K,)); det = s (s + |r|^2), and the inverse by Sherman-Morrison."""
    var = F.softplus(sigma_2) + epsilon
    du, dv = u - u_gt, v - v_gt
    det = var * (var + (kappa_u ** 2 + kappa_v ** 2))
    d_dot_r = du * kappa_u + dv * kappa_v
    return (0.5 * (_LOG_2PI + torch.log(det) + (du ** 2 + dv ** 2) / var - d_dot_r ** 2 / det)).sum()


class DensePoseChartLoss:
    """The chart losses; `uv_confidence` (None, "iid_iso" or "indep_aniso") replaces U / V by the Gaussian UV
    NLL of the predictor's sigma_2 [, kappa_u, kappa_v] (`DensePoseChartWithConfidenceLoss.from_config` sets
    it from UV_CONFIDENCE, as detectron2; the plain `DensePoseChartLoss` name ignores confidences, as there)."""

    def __init__(self, heatmap_size: int, w_segm: float, w_part: float, w_points: float, n_segm_chan: int, *,
                 uv_confidence: Optional[str] = None, uv_confidence_epsilon: float = 0.01):
        if n_segm_chan not in (2, 15):
            raise ValueError(f"NUM_COARSE_SEGM_CHANNELS must be 2 or 15, got {n_segm_chan}")
        if uv_confidence not in (None, "iid_iso", "indep_aniso"):
            raise ValueError(f"UV_CONFIDENCE.TYPE must be iid_iso or indep_aniso, got {uv_confidence!r}")
        self.heatmap_size = int(heatmap_size)
        self.w_segm, self.w_part, self.w_points = float(w_segm), float(w_part), float(w_points)
        self.n_segm_chan = int(n_segm_chan)
        self.uv_confidence = uv_confidence
        self.uv_confidence_epsilon = float(uv_confidence_epsilon)

    @classmethod
    def _base_kwargs(cls, cfg) -> dict:
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        if h.COARSE_SEGM_TRAINED_BY_MASKS:
            raise NotImplementedError(
                "MODEL.ROI_DENSEPOSE_HEAD.COARSE_SEGM_TRAINED_BY_MASKS: training the coarse segmentation by "
                "instance masks is not supported; set it to False (trained by the DensePose dp_masks)")
        return dict(heatmap_size=h.HEATMAP_SIZE, w_segm=h.INDEX_WEIGHTS, w_part=h.PART_WEIGHTS,
                    w_points=h.POINT_REGRESSION_WEIGHTS, n_segm_chan=h.NUM_COARSE_SEGM_CHANNELS)

    @classmethod
    def from_config(cls, cfg) -> "DensePoseChartLoss":
        return cls(**cls._base_kwargs(cfg))

    @property
    def loss_names(self):
        return LOSS_NAMES if self.uv_confidence is None else CONFIDENCE_LOSS_NAMES

    def _uv_confidences(self, outputs: Any) -> List[torch.Tensor]:
        names = ("sigma_2",) if self.uv_confidence == "iid_iso" else ("sigma_2", "kappa_u", "kappa_v")
        found = [getattr(outputs, n, None) for n in names]
        if any(t is None for t in found):
            raise ValueError(f"UV_CONFIDENCE {self.uv_confidence} needs the predictor outputs {list(names)}: use "
                             "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME DensePoseChartWithConfidencePredictor")
        return found

    def fake_losses(self, outputs: Any) -> Dict[str, torch.Tensor]:
        losses = {
            "loss_densepose_S": outputs.coarse_segm.sum() * 0,
            "loss_densepose_I": outputs.fine_segm.sum() * 0,
        }
        if self.uv_confidence is None:
            losses.update(loss_densepose_U=outputs.u.sum() * 0, loss_densepose_V=outputs.v.sum() * 0)
        else:
            total = outputs.u.sum() + outputs.v.sum()
            for t in self._uv_confidences(outputs):
                total = total + t.sum()
            losses["loss_densepose_UV"] = total * 0
        return losses

    def uv_losses(self, outputs: Any, packed, sampler: PointSampler, valid_fg: torch.Tensor) -> Dict[str, torch.Tensor]:
        u_est = sampler.sample(outputs.u, packed.i)[valid_fg]
        v_est = sampler.sample(outputs.v, packed.i)[valid_fg]
        u_gt, v_gt = packed.u[valid_fg], packed.v[valid_fg]
        if self.uv_confidence is None:
            return {
                "loss_densepose_U": F.smooth_l1_loss(u_est, u_gt, reduction="sum") * self.w_points,
                "loss_densepose_V": F.smooth_l1_loss(v_est, v_gt, reduction="sum") * self.w_points,
            }
        conf = [sampler.sample(t, packed.i)[valid_fg] for t in self._uv_confidences(outputs)]
        if self.uv_confidence == "iid_iso":
            nll = iid_isotropic_gaussian_uv_nll(u_est, v_est, conf[0], u_gt, v_gt, self.uv_confidence_epsilon)
        else:
            nll = indep_anisotropic_gaussian_uv_nll(u_est, v_est, *conf, u_gt, v_gt, self.uv_confidence_epsilon)
        return {"loss_densepose_UV": nll * self.w_points}

    def __call__(self, proposals_with_gt: List[Instances], outputs: Any, **kwargs) -> Dict[str, torch.Tensor]:
        packed = pack_chart_annotations(proposals_with_gt) if proposals_with_gt else None
        if packed is None:
            return self.fake_losses(outputs)
        device = outputs.u.device
        packed = type(packed)(**{k: (None if t is None else t.to(device)) for k, t in vars(packed).items()})
        sampler = PointSampler.create(packed, tuple(outputs.u.shape[2:]))
        valid_fg = sampler.valid & (packed.i > 0)
        if not bool(valid_fg.any()):
            return self.fake_losses(outputs)

        losses = self.uv_losses(outputs, packed, sampler, valid_fg)
        fine_est = sampler.sample(outputs.fine_segm)[sampler.valid]
        losses["loss_densepose_I"] = F.cross_entropy(fine_est, packed.i[sampler.valid]) * self.w_part
        losses["loss_densepose_S"] = self.segm_loss(outputs, packed) * self.w_segm
        return {k: losses[k] for k in self.loss_names}

    def segm_loss(self, outputs: Any, packed) -> torch.Tensor:
        return coarse_segm_loss(outputs.coarse_segm, packed, self.heatmap_size, self.n_segm_chan)


class DensePoseChartWithConfidenceLoss(DensePoseChartLoss):
    """detectron2's default loss name: the chart loss with the UV confidence the config enables (none: exactly
    DensePoseChartLoss)."""

    @classmethod
    def from_config(cls, cfg) -> "DensePoseChartWithConfidenceLoss":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        kwargs = cls._base_kwargs(cfg)
        if h.UV_CONFIDENCE.ENABLED:
            kwargs.update(uv_confidence=h.UV_CONFIDENCE.TYPE, uv_confidence_epsilon=h.UV_CONFIDENCE.EPSILON)
        return cls(**kwargs)


DENSEPOSE_LOSS_REGISTRY._do_register("DensePoseChartLoss", DensePoseChartLoss)
DENSEPOSE_LOSS_REGISTRY._do_register("DensePoseChartWithConfidenceLoss", DensePoseChartWithConfidenceLoss)
