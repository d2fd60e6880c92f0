"""Helpers of the chart-based DensePose losses (semantics of detectron2 DensePose's `losses/utils.py`).

Ground truth of a person lives in the 256 x 256 frame of its GT box; predictions live on an S x S grid
over the matched proposal box. A point (x, y) of the 256 frame sits in the image at
`x0_gt + x * w_gt / 256`; on the prediction grid at `(x_img - x0_est) * S / w_est`. Points that fall
outside the proposal box are dropped; the others are sampled bilinearly from the predictions.
"""
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch.nn import functional as F

from ...structures import Instances


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def _box_tensor(boxes) -> torch.Tensor:
    return boxes.tensor if hasattr(boxes, "tensor") else boxes


@dataclass
class PackedChartAnnotations:
    """All DensePose ground truth of a batch in flat tensors (K points, N instances with DensePose).

    i, x, y, u, v: (K,) point labels / 256-frame coordinates / chart coordinates;
    point_box: (K,) index (0..N-1) of the instance each point belongs to;
    box_xywh_gt, box_xywh_est: (N, 4) GT box and matched proposal box of each instance;
    box_index: (N,) row of each instance in the predictor outputs (which cover all proposals);
    segm: (N, 256, 256) coarse labels, or None unless every instance has one.
    """

    i: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    point_box: torch.Tensor
    box_xywh_gt: torch.Tensor
    box_xywh_est: torch.Tensor
    box_index: torch.Tensor
    segm: Optional[torch.Tensor]


def iter_annotated_instances(proposals_with_gt: List[Instances], usable=None
                             ) -> Iterator[Tuple[int, Any, torch.Tensor, torch.Tensor]]:
    """(row in the predictor outputs, DensePose data, (1, 4) GT box XYWH, (1, 4) proposal box XYWH) of every
    proposal with usable ground truth, in the order of the predictor outputs (images one after another).
    Instances without annotation, with no points or for which `usable(dp)` is False are skipped (their rows
    are simply not used); both packers of the chart and CSE losses walk the batch with this."""
    row = 0  # row in the predictor outputs
    for inst in proposals_with_gt:
        n = len(inst)
        if n == 0:
            continue
        dp_list = inst.get("gt_densepose") if inst.has("gt_densepose") else None
        if dp_list is None:
            row += n
            continue
        est = xyxy_to_xywh(_box_tensor(inst.proposal_boxes))
        gt = xyxy_to_xywh(_box_tensor(inst.gt_boxes))
        for k in range(n):
            dp = dp_list[k]
            if dp is not None and len(dp.x) > 0 and (usable is None or usable(dp)):
                yield row, dp, gt[k : k + 1].to(dp.x.device), est[k : k + 1].to(dp.x.device)
            row += 1


def pack_chart_annotations(proposals_with_gt: List[Instances]) -> Optional[PackedChartAnnotations]:
    """Gather the DensePose chart ground truth of the proposals (see `iter_annotated_instances`). None if
    nothing is left."""
    cols = {k: [] for k in ("i", "x", "y", "u", "v", "point_box", "gt", "est", "index", "segm")}
    for row, dp, gt, est in iter_annotated_instances(proposals_with_gt):
        n_inst = len(cols["gt"])
        for name in ("i", "x", "y", "u", "v"):
            cols[name].append(getattr(dp, name))
        cols["point_box"].append(torch.full((len(dp.x),), n_inst, dtype=torch.long, device=dp.x.device))
        cols["gt"].append(gt)
        cols["est"].append(est)
        cols["index"].append(row)
        cols["segm"].append(dp.segm)
    if not cols["gt"]:
        return None
    return PackedChartAnnotations(
        i=torch.cat(cols["i"]).long(),
        x=torch.cat(cols["x"]).float(),
        y=torch.cat(cols["y"]).float(),
        u=torch.cat(cols["u"]).float(),
        v=torch.cat(cols["v"]).float(),
        point_box=torch.cat(cols["point_box"]),
        **_pack_boxes(cols),
    )


def _pack_boxes(cols) -> dict:
    """The per-instance fields shared by the chart and CSE packs (box_xywh_gt / _est, box_index, segm)."""
    device = cols["x"][0].device
    has_all_segm = all(s is not None for s in cols["segm"])
    return dict(
        box_xywh_gt=torch.cat(cols["gt"]),
        box_xywh_est=torch.cat(cols["est"]),
        box_index=torch.as_tensor(cols["index"], dtype=torch.long, device=device),
        segm=torch.stack(cols["segm"]).to(device) if has_all_segm else None,
    )


def _grid_coordinate(p_norm, p0_gt, size_gt, p0_est, size_est, grid_size: int):
    """One axis of the bilinear sampling: (lo, hi, weight of hi, inside) per point.

    The point sits at `p0_gt + p_norm * size_gt / 256` in the image; inside the proposal if
    `0 <= p - p0_est < size_est`; on the grid at `(p - p0_est) * grid_size / size_est`."""
    p = p0_gt + p_norm * size_gt / 256.0
    inside = (p - p0_est >= 0) & (p - p0_est < size_est)
    g = (p - p0_est) * grid_size / size_est
    lo = g.floor().long().clamp(min=0, max=grid_size - 1)
    hi = (lo + 1).clamp(max=grid_size - 1)
    g = torch.min(hi.float(), g)  # at the last cell the weight of `hi` (== lo) collapses onto lo
    return lo, hi, g - lo.float(), inside


@dataclass
class PointSampler:
    """Bilinear sampling of (N, C, S, S) predictions at the packed annotation points."""

    rows: torch.Tensor  # (K,) predictor-output row of each point
    y_lo: torch.Tensor
    y_hi: torch.Tensor
    x_lo: torch.Tensor
    x_hi: torch.Tensor
    w_x: torch.Tensor  # weight of x_hi
    w_y: torch.Tensor  # weight of y_hi
    valid: torch.Tensor  # (K,) bool: the point lies inside its proposal box

    @classmethod
    def create(cls, packed: PackedChartAnnotations, size_hw: Tuple[int, int]) -> "PointSampler":
        h, w = size_hw
        gt = packed.box_xywh_gt[packed.point_box]
        est = packed.box_xywh_est[packed.point_box]
        x_lo, x_hi, w_x, in_x = _grid_coordinate(packed.x, gt[:, 0], gt[:, 2], est[:, 0], est[:, 2], w)
        y_lo, y_hi, w_y, in_y = _grid_coordinate(packed.y, gt[:, 1], gt[:, 3], est[:, 1], est[:, 3], h)
        rows = packed.box_index[packed.point_box]
        return cls(rows, y_lo, y_hi, x_lo, x_hi, w_x, w_y, in_x & in_y)

    def sample(self, z: torch.Tensor, channel: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z (N, C, S, S) at every point: (K, C), or (K,) of channel[k] for point k when given."""
        c = slice(None) if channel is None else channel
        wx, wy = self.w_x, self.w_y
        if channel is None:
            wx, wy = wx[:, None], wy[:, None]
        return (
            z[self.rows, c, self.y_lo, self.x_lo] * (1 - wx) * (1 - wy)
            + z[self.rows, c, self.y_lo, self.x_hi] * wx * (1 - wy)
            + z[self.rows, c, self.y_hi, self.x_lo] * (1 - wx) * wy
            + z[self.rows, c, self.y_hi, self.x_hi] * wx * wy
        )


def resample_segm(segm: torch.Tensor, box_xywh_src: torch.Tensor, box_xywh_dst: torch.Tensor,
                  out_size: int) -> torch.Tensor:
    """(N, H, W) labels over the source boxes -> (N, out_size, out_size) labels over the destination
    boxes, nearest neighbour, 0 outside the source box (detectron2's `resample_data`: output cell j
    samples the destination box at j / out_size of its extent, corners aligned to the source map)."""
    n = segm.shape[0]
    x0s, y0s, ws, hs = box_xywh_src.unbind(1)
    x0d, y0d, wd, hd = box_xywh_dst.unbind(1)
    # destination box edges in the source's normalised [-1, 1] coordinates
    x0 = 2 * (x0d - x0s) / ws - 1
    y0 = 2 * (y0d - y0s) / hs - 1
    x1 = 2 * (x0d + wd - x0s) / ws - 1
    y1 = 2 * (y0d + hd - y0s) / hs - 1
    t = torch.arange(out_size, device=segm.device, dtype=torch.float32) / out_size
    gx = x0[:, None, None] + t[None, None, :] * (x1 - x0)[:, None, None]
    gy = y0[:, None, None] + t[None, :, None] * (y1 - y0)[:, None, None]
    grid = torch.stack([gx.expand(n, out_size, out_size), gy.expand(n, out_size, out_size)], dim=3)
    out = F.grid_sample(segm[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out[:, 0].round().long()


def coarse_segm_loss(coarse_segm: torch.Tensor, packed, heatmap_size: int, n_segm_chan: int) -> torch.Tensor:
    """Cross-entropy of the coarse segmentation logits (N, C, S, S) of the packed instances against their
    256 x 256 labels resampled onto the proposal boxes (nearest), mean over the cells; 2 channels: person
    (label > 0) / background. `coarse_segm.sum() * 0` when some instance has no dp_masks (no coarse
    supervision in this batch). The chart and CSE losses' S term (detectron2's SegmentationLoss)."""
    if packed.segm is None:
        return coarse_segm.sum() * 0
    est = coarse_segm[packed.box_index]
    with torch.no_grad():
        gt = resample_segm(packed.segm, packed.box_xywh_gt, packed.box_xywh_est, heatmap_size)
        if n_segm_chan == 2:
            gt = (gt > 0).long()
    if est.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"coarse segmentation is {tuple(est.shape[-2:])} but HEATMAP_SIZE is {heatmap_size}")
    return F.cross_entropy(est, gt)
