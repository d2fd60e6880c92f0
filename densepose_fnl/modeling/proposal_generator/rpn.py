"""Region Proposal Network (detectron2 semantics): shared 3x3 conv head over pyramid levels, per-level
top-k, clipping, per-level NMS and a per-image cap on proposals.

Float island for int8: objectness logits and anchor deltas leave the head as float tensors and all
decoding / NMS below runs in float (paper 3.4).
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from ...layers import batched_nms
from ...structures import Instances, ShapeSpec
from ...structures.boxes import clip_boxes, nonempty
from ..box_regression import Box2BoxTransform
from ..matcher import Matcher, subsample_labels
from ..registry import ANCHOR_GENERATOR_REGISTRY, PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY, get_from_registry
from .anchor_generator import DefaultAnchorGenerator  # noqa: F401  (registers it)


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dim: int = -1):
        super().__init__()
        conv_dim = in_channels if conv_dim == -1 else conv_dim
        self.conv = nn.Conv2d(in_channels, conv_dim, kernel_size=3, stride=1, padding=1)
        self.objectness_logits = nn.Conv2d(conv_dim, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(conv_dim, num_anchors * box_dim, kernel_size=1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec], num_anchors: int) -> "StandardRPNHead":
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"RPN input levels must have the same channels, got {channels}")
        conv_dims = list(cfg.MODEL.RPN.CONV_DIMS)
        if len(conv_dims) != 1:
            raise NotImplementedError("MODEL.RPN.CONV_DIMS with more than one conv is not supported")
        return cls(channels.pop(), num_anchors, conv_dim=conv_dims[0])

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    def __init__(
        self,
        in_features: List[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_topk: Tuple[int, int],
        post_nms_topk: Tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: Optional[Dict[str, float]] = None,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        self.loss_weight = loss_weight or {"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0}
        if box_reg_loss_type != "smooth_l1":
            raise NotImplementedError(f"MODEL.RPN.BBOX_REG_LOSS_TYPE '{box_reg_loss_type}' (only smooth_l1)")
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "RPN":
        r = cfg.MODEL.RPN
        missing = [f for f in r.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.RPN.IN_FEATURES {missing} are not backbone outputs {list(input_shape)}")
        shapes = [input_shape[f] for f in r.IN_FEATURES]
        anchor_cls = get_from_registry(ANCHOR_GENERATOR_REGISTRY, cfg.MODEL.ANCHOR_GENERATOR.NAME,
                                       "MODEL.ANCHOR_GENERATOR.NAME")
        anchor_generator = anchor_cls.from_config(cfg, shapes)
        num_anchors = set(anchor_generator.num_cell_anchors)
        if len(num_anchors) != 1:
            raise ValueError("Every RPN level must have the same number of anchors")
        head_cls = get_from_registry(RPN_HEAD_REGISTRY, r.HEAD_NAME, "MODEL.RPN.HEAD_NAME")
        return cls(
            in_features=r.IN_FEATURES,
            head=head_cls.from_config(cfg, shapes, num_anchors.pop()),
            anchor_generator=anchor_generator,
            anchor_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=True),
            box2box_transform=Box2BoxTransform(weights=r.BBOX_REG_WEIGHTS),
            batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
            positive_fraction=r.POSITIVE_FRACTION,
            pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
            post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST),
            nms_thresh=r.NMS_THRESH,
            min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            anchor_boundary_thresh=r.BOUNDARY_THRESH,
            loss_weight={"loss_rpn_cls": r.LOSS_WEIGHT, "loss_rpn_loc": r.BBOX_REG_LOSS_WEIGHT * r.LOSS_WEIGHT},
            box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
            smooth_l1_beta=r.SMOOTH_L1_BETA,
        )

    def flatten_predictions(self, logits: List[torch.Tensor], deltas: List[torch.Tensor]
                            ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """(N, A, H, W) -> (N, H*W*A); (N, A*4, H, W) -> (N, H*W*A, 4), matching the anchor order."""
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for x in deltas]
        return logits, deltas

    def select_proposals(self, features: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                         height, width) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image's proposals (detectron2's `find_top_rpn_proposals`), tensor-only: the eager model, the
        exported graph and the int8 model all run this.

        features: the RPN input levels (their sizes place the anchors); logits[l] (H_l*W_l*A,) and
        deltas[l] (H_l*W_l*A, 4) this image's flattened head outputs; height / width: the unpadded image
        size, ints or 0-d tensors (symbolic in the graph). Per level the `pre_nms_topk` best anchors are
        made (only those: `anchors_at`) and decoded; then clipping, removal of empty / non-finite boxes,
        NMS within each level and the `post_nms_topk` best overall (a cap inside the NMS op).
        Returns (boxes (R, 4), objectness logits (R,)), best first."""
        pre_nms_topk = self.pre_nms_topk[self.training]
        boxes_all, scores_all, levels_all = [], [], []
        for level, (feature, scores, level_deltas) in enumerate(zip(features, logits, deltas)):
            # symbolic min: a Python min on the shape would freeze an export to one image size
            top_scores, idx = scores.topk(torch.sym_min(scores.shape[0], pre_nms_topk))
            anchors = self.anchor_generator.anchors_at(level, feature, idx)
            boxes_all.append(self.box2box_transform.apply_deltas(level_deltas[idx], anchors))
            scores_all.append(top_scores)
            levels_all.append(torch.full_like(idx, level))
        boxes, scores, levels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(levels_all)
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        if self.training and not torch.compiler.is_exporting() and not bool(finite.all()):
            raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
        boxes = clip_boxes(boxes, height, width)
        keep = (finite & nonempty(boxes, self.min_box_size)).nonzero()[:, 0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.nms_thresh, max_keep=self.post_nms_topk[self.training],
                           split_groups=not self.training)
        return boxes[keep], scores[keep]

    def predictions(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """The head on the RPN input levels, flattened: per level logits (N, H*W*A) and deltas (N, H*W*A, 4).
        Float island: decoding and NMS run on float tensors even in an int8 model."""
        logits, deltas = self.rpn_head(features)
        return self.flatten_predictions([x.float() for x in logits], [x.float() for x in deltas])

    def forward(self, image_sizes: List[Tuple[int, int]], features: Dict[str, torch.Tensor],
                gt_instances: Optional[List[Instances]] = None) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        features = [features[f] for f in self.in_features]
        logits, deltas = self.predictions(features)
        losses = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN needs ground-truth instances in training")
            anchors = self.anchor_generator(features)
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
        proposals = []
        with torch.no_grad():
            for n, (h, w) in enumerate(image_sizes):
                boxes, scores = self.select_proposals(features, [x[n].detach() for x in logits],
                                                      [d[n].detach() for d in deltas], h, w)
                proposals.append(Instances((h, w), proposal_boxes=boxes, objectness_logits=scores))
        return proposals, losses

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[torch.Tensor], gt_instances: List[Instances]
                                 ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        anchors = torch.cat(anchors, dim=0)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            h, w = inst.image_size
            gt_boxes_i = inst.gt_boxes
            matched_idxs, labels = self.anchor_matcher(box_iou(gt_boxes_i, anchors))
            labels = labels.to(device=gt_boxes_i.device)
            if self.anchor_boundary_thresh >= 0:
                t = self.anchor_boundary_thresh
                inside = (anchors[:, 0] >= -t) & (anchors[:, 1] >= -t) & (anchors[:, 2] < w + t) & (anchors[:, 3] < h + t)
                labels[~inside] = -1
            pos, neg = subsample_labels(labels, self.batch_size_per_image, self.positive_fraction, 0)
            labels = torch.full_like(labels, -1)
            labels[pos] = 1
            labels[neg] = 0
            gt_labels.append(labels)
            matched_gt_boxes.append(gt_boxes_i[matched_idxs] if len(gt_boxes_i) else torch.zeros_like(anchors))
        return gt_labels, matched_gt_boxes

    def losses(self, anchors, pred_logits, gt_labels, pred_deltas, gt_boxes) -> Dict[str, torch.Tensor]:
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)
        anchors = torch.cat(anchors, dim=0)
        pos_mask = gt_labels == 1
        gt_deltas = torch.stack([self.box2box_transform.get_deltas(anchors, b) for b in gt_boxes])
        pred = torch.cat(pred_deltas, dim=1)
        loc_loss = smooth_l1_loss(pred[pos_mask], gt_deltas[pos_mask], self.smooth_l1_beta)
        valid = gt_labels >= 0
        cls_loss = F.binary_cross_entropy_with_logits(
            torch.cat(pred_logits, dim=1)[valid], gt_labels[valid].to(torch.float32), reduction="sum")
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": cls_loss / normalizer, "loss_rpn_loc": loc_loss / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}


def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Summed smooth L1 (pure L1 when beta < 1e-5), as fvcore's."""
    diff = torch.abs(input - target)
    if beta < 1e-5:
        return diff.sum()
    return torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).sum()


def build_proposal_generator(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        raise NotImplementedError("MODEL.PROPOSAL_GENERATOR.NAME 'PrecomputedProposals' is not supported")
    return get_from_registry(PROPOSAL_GENERATOR_REGISTRY, name, "MODEL.PROPOSAL_GENERATOR.NAME").from_config(
        cfg, input_shape)
