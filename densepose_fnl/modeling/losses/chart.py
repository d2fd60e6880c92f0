"""Chart-based DensePose losses (DensePose R-CNN; detectron2's `DensePoseChartLoss`).

* loss_densepose_S: cross-entropy of the coarse segmentation (2 channels: person / background, or 15:
  background + 14 coarse parts) against the 256 x 256 GT labels resampled onto the proposal box
  (nearest), mean over the S x S cells of the instances with DensePose; weight INDEX_WEIGHTS;
* loss_densepose_I: cross-entropy of the 25 fine-part logits sampled bilinearly at the annotated points
  inside the proposal, mean over those points; weight PART_WEIGHTS;
* loss_densepose_U / _V: smooth-L1 (beta 1) between U / V of the point's true part channel, sampled
  bilinearly, and the annotated value, SUMMED over the foreground points inside the proposal; weight
  POINT_REGRESSION_WEIGHTS.

With no usable point in the batch all four are `output.sum() * 0`, so every predictor parameter still
takes part in the graph (DistributedDataParallel needs the same graph on every rank).
"""
from typing import Any, Dict, List

import torch
from torch.nn import functional as F

from ...structures import Instances
from ..registry import DENSEPOSE_LOSS_REGISTRY
from .utils import PointSampler, pack_chart_annotations, resample_segm

LOSS_NAMES = ("loss_densepose_S", "loss_densepose_I", "loss_densepose_U", "loss_densepose_V")


class DensePoseChartLoss:
    def __init__(self, heatmap_size: int, w_segm: float, w_part: float, w_points: float, n_segm_chan: int):
        if n_segm_chan not in (2, 15):
            raise ValueError(f"NUM_COARSE_SEGM_CHANNELS must be 2 or 15, got {n_segm_chan}")
        self.heatmap_size = int(heatmap_size)
        self.w_segm, self.w_part, self.w_points = float(w_segm), float(w_part), float(w_points)
        self.n_segm_chan = int(n_segm_chan)

    @classmethod
    def from_config(cls, cfg) -> "DensePoseChartLoss":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        if h.COARSE_SEGM_TRAINED_BY_MASKS:
            raise NotImplementedError(
                "MODEL.ROI_DENSEPOSE_HEAD.COARSE_SEGM_TRAINED_BY_MASKS: training the coarse segmentation by "
                "instance masks is not supported; set it to False (trained by the DensePose dp_masks)")
        if h.UV_CONFIDENCE.ENABLED or h.SEGM_CONFIDENCE.ENABLED:
            raise NotImplementedError(
                "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE / SEGM_CONFIDENCE: confidence losses are not supported")
        return cls(h.HEATMAP_SIZE, h.INDEX_WEIGHTS, h.PART_WEIGHTS, h.POINT_REGRESSION_WEIGHTS,
                   h.NUM_COARSE_SEGM_CHANNELS)

    def fake_losses(self, outputs: Any) -> Dict[str, torch.Tensor]:
        return {
            "loss_densepose_S": outputs.coarse_segm.sum() * 0,
            "loss_densepose_I": outputs.fine_segm.sum() * 0,
            "loss_densepose_U": outputs.u.sum() * 0,
            "loss_densepose_V": outputs.v.sum() * 0,
        }

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

        u_est = sampler.sample(outputs.u, packed.i)[valid_fg]
        v_est = sampler.sample(outputs.v, packed.i)[valid_fg]
        losses = {
            "loss_densepose_U": F.smooth_l1_loss(u_est, packed.u[valid_fg], reduction="sum") * self.w_points,
            "loss_densepose_V": F.smooth_l1_loss(v_est, packed.v[valid_fg], reduction="sum") * self.w_points,
        }
        fine_est = sampler.sample(outputs.fine_segm)[sampler.valid]
        losses["loss_densepose_I"] = F.cross_entropy(fine_est, packed.i[sampler.valid]) * self.w_part
        losses["loss_densepose_S"] = self.segm_loss(outputs, packed) * self.w_segm
        return {k: losses[k] for k in LOSS_NAMES}

    def segm_loss(self, outputs: Any, packed) -> torch.Tensor:
        if packed.segm is None:  # some instance has no dp_masks: no coarse supervision in this batch
            return outputs.coarse_segm.sum() * 0
        est = outputs.coarse_segm[packed.box_index]
        with torch.no_grad():
            gt = resample_segm(packed.segm, packed.box_xywh_gt, packed.box_xywh_est, self.heatmap_size)
            if self.n_segm_chan == 2:
                gt = (gt > 0).long()
        if est.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f"coarse segmentation is {tuple(est.shape[-2:])} but HEATMAP_SIZE is {self.heatmap_size}")
        return F.cross_entropy(est, gt)


DENSEPOSE_LOSS_REGISTRY._do_register("DensePoseChartLoss", DensePoseChartLoss)
# with confidences disabled (the only supported case) the confidence loss is the plain chart loss
DENSEPOSE_LOSS_REGISTRY._do_register("DensePoseChartWithConfidenceLoss", DensePoseChartLoss)
