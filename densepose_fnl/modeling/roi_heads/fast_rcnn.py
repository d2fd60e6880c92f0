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


def fast_rcnn_inference_single_image(boxes: torch.Tensor, scores: torch.Tensor, height, width, score_thresh: float,
                                     nms_thresh: float, topk_per_image: int
                                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's detections (detectron2's `fast_rcnn_inference_single_image`), tensor-only: the eager
    model, the exported graph and the int8 model all run this.

    boxes (R, K*4) decoded per class (or (R, 4) class-agnostic), scores (R, K+1) softmax probabilities with
    background last; height / width: the unpadded image size, ints or 0-d tensors. Rows with non-finite
    values are dropped, boxes clipped, (RoI, class) pairs kept above `score_thresh`, NMS per class, the
    `topk_per_image` best kept (a cap inside the NMS op; < 0: all).
    Returns (boxes (D, 4), scores (D,), classes (D,) int64), best first."""
    scores = scores[:, :-1]
    num_classes = scores.shape[1]
    num_reg = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), height, width).reshape(-1, num_reg, 4)
    if num_reg == 1:
        boxes = boxes.expand(-1, num_classes, 4)
    valid = torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(scores).all(dim=1)
    idx = ((scores > score_thresh) & valid[:, None]).nonzero()
    boxes, scores, classes = boxes[idx[:, 0], idx[:, 1]], scores[idx[:, 0], idx[:, 1]], idx[:, 1]
    keep = batched_nms(boxes, scores, classes, nms_thresh, max_keep=topk_per_image, split_groups=True)
    return boxes[keep], scores[keep], classes[keep]


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

    def predict_boxes_and_probs(self, predictions: Tuple[torch.Tensor, torch.Tensor], proposal_boxes: torch.Tensor
                                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(class logits, deltas) of R RoIs -> (decoded boxes (R, K*4), softmax probabilities (R, K+1)).
        Float island: an int8 predictor's outputs are decoded in float."""
        scores, deltas = predictions
        boxes = self.box2box_transform.apply_deltas(deltas.float(), proposal_boxes)
        return boxes, F.softmax(scores.float(), dim=-1)

    def inference_single_image(self, predictions: Tuple[torch.Tensor, torch.Tensor], proposal_boxes: torch.Tensor,
                               height, width) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's (boxes, scores, classes) from its RoIs' predictions (see `fast_rcnn_inference_single_image`)."""
        boxes, probs = self.predict_boxes_and_probs(predictions, proposal_boxes)
        return fast_rcnn_inference_single_image(boxes, probs, height, width, self.test_score_thresh,
                                                self.test_nms_thresh, self.test_topk_per_image)

    def inference(self, predictions, proposals: List[Instances]) -> List[Instances]:
        num_per_image = [len(p) for p in proposals]
        results = []
        for scores, deltas, p in zip(predictions[0].split(num_per_image), predictions[1].split(num_per_image),
                                     proposals):
            boxes, scores, classes = self.inference_single_image((scores, deltas), p.proposal_boxes, *p.image_size)
            results.append(Instances(p.image_size, pred_boxes=boxes, scores=scores, pred_classes=classes))
        return results
