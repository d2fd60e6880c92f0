"""Box predictor (class scores + box deltas), its losses and detection post-processing
(detectron2's FastRCNNOutputLayers: background is the LAST class column)."""
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ...layers import batched_nms
from ...structures import Instances, ShapeSpec
from ...structures.boxes import clip_boxes
from ..box_regression import Box2BoxTransform
from ..proposal_generator.rpn import smooth_l1_loss


def fast_rcnn_inference_single_image(boxes: torch.Tensor, scores: torch.Tensor, image_shape: Tuple[int, int],
                                     score_thresh: float, nms_thresh: float, topk_per_image: int) -> Instances:
    """boxes (R, K*4), scores (R, K+1) -> Instances(pred_boxes, scores, pred_classes) after threshold + NMS."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[valid], scores[valid][:, :-1]
    num_bbox_reg_classes = boxes.shape[1] // 4
    h, w = image_shape
    boxes = clip_boxes(boxes.reshape(-1, 4), h, w).view(-1, num_bbox_reg_classes, 4)
    filter_mask = scores > score_thresh
    filter_inds = filter_mask.nonzero()
    boxes = boxes[filter_inds[:, 0], 0] if num_bbox_reg_classes == 1 else boxes[filter_mask]
    scores = scores[filter_mask]
    keep = batched_nms(boxes, scores, filter_inds[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    return Instances(image_shape, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=filter_inds[keep, 1])


class FastRCNNOutputLayers(nn.Module):
    def __init__(self, input_shape: ShapeSpec, box2box_transform: Box2BoxTransform, num_classes: int,
                 test_score_thresh: float = 0.0, test_nms_thresh: float = 0.5, test_topk_per_image: int = 100,
                 cls_agnostic_bbox_reg: bool = False, smooth_l1_beta: float = 0.0, box_reg_loss_type: str = "smooth_l1",
                 loss_weight: Dict[str, float] = None):
        super().__init__()
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)
        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.smooth_l1_beta = smooth_l1_beta
        if box_reg_loss_type != "smooth_l1":
            raise NotImplementedError(f"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE '{box_reg_loss_type}' (only smooth_l1)")
        self.loss_weight = loss_weight or {}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "FastRCNNOutputLayers":
        b = cfg.MODEL.ROI_BOX_HEAD
        return cls(
            input_shape, Box2BoxTransform(weights=b.BBOX_REG_WEIGHTS), cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, cls_agnostic_bbox_reg=b.CLS_AGNOSTIC_BBOX_REG,
            smooth_l1_beta=b.SMOOTH_L1_BETA, box_reg_loss_type=b.BBOX_REG_LOSS_TYPE,
            loss_weight={"loss_box_reg": b.BBOX_REG_LOSS_WEIGHT},
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        scores, deltas = predictions
        gt_classes = torch.cat([p.gt_classes for p in proposals], dim=0)
        proposal_boxes = torch.cat([p.proposal_boxes for p in proposals], dim=0)
        gt_boxes = torch.cat([p.gt_boxes for p in proposals], dim=0)
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean") if len(gt_classes) else scores.sum() * 0.0
        fg = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes)).squeeze(1)
        if deltas.shape[1] == 4:
            fg_deltas = deltas[fg]
        else:
            fg_deltas = deltas.view(-1, self.num_classes, 4)[fg, gt_classes[fg]]
        gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg], gt_boxes[fg])
        loss_box_reg = smooth_l1_loss(fg_deltas, gt_deltas, self.smooth_l1_beta) / max(gt_classes.numel(), 1.0)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg * self.loss_weight.get("loss_box_reg", 1.0)}

    def inference(self, predictions, proposals: List[Instances]) -> List[Instances]:
        scores, deltas = predictions
        num_per_image = [len(p) for p in proposals]
        proposal_boxes = torch.cat([p.proposal_boxes for p in proposals], dim=0)
        boxes = self.box2box_transform.apply_deltas(deltas, proposal_boxes).split(num_per_image)
        probs = F.softmax(scores, dim=-1).split(num_per_image)
        return [
            fast_rcnn_inference_single_image(b, s, p.image_size, self.test_score_thresh, self.test_nms_thresh,
                                             self.test_topk_per_image)
            for b, s, p in zip(boxes, probs, proposals)
        ]
