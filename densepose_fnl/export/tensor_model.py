"""Tensor-only inference wrapper of GeneralizedRCNN (one image tensor in, tensors out) for ONNX export.

It reuses the model's own sub-modules (backbone + neck, RPN head, anchor generator, box pooler / head /
predictor, DensePose pooler / head / predictor), so a quantized model is exported by swapping those
sub-modules, and it re-writes only the glue that is Python-and-data-dependent in the eager model:

* preprocessing in the graph: uint8 or float (1, 3, H, W) image in INPUT.FORMAT, normalisation with
  PIXEL_MEAN / PIXEL_STD, zero padding of the normalised image to a multiple of 32 (as the eager model);
* RPN: per-level top-k with k = min(H_l * W_l * A, PRE_NMS_TOPK_TEST) as a symbolic min (no Python
  `min` on a shape, which would freeze the export to one image size); only the kept anchors are made
  and decoded; clipping to the unpadded image, removal of empty boxes, per-level NMS (branch-free
  `layers.nms.batched_nms`) capped at POST_NMS_TOPK_TEST inside the NMS op (ONNX Runtime stops there);
* box branch: softmax, class-specific decoding, clipping, SCORE_THRESH_TEST, per-class NMS,
  TEST.DETECTIONS_PER_IMAGE cap (all as detectron2's `fast_rcnn_inference_single_image`);
* DensePose branch on the kept boxes.

Outputs (R = number of detections, S = HEATMAP_SIZE), boxes in the coordinates of the input tensor:
  boxes (R, 4) float XYXY, scores (R,) float, classes (R,) int64,
  coarse_segm (R, 2|15, S, S), fine_segm (R, 25, S, S), u (R, 25, S, S), v (R, 25, S, S) float logits /
  chart coordinates, exactly the fields of `DensePoseChartPredictorOutput`.
Resizing the image (shortest edge) and mapping the boxes back to the original image, and turning the
maps into per-person labels / UV (`postprocess.densepose_chart_results`) stay outside the graph
(`export.OrtPredictor`), as in the eager `DefaultPredictor`.
"""
from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import batched_nms

OUTPUT_NAMES = ("boxes", "scores", "classes", "coarse_segm", "fine_segm", "u", "v")


def _clip(boxes: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Clip (R, 4) XYXY boxes to [0, w] x [0, h]; h, w are 0-d float tensors (symbolic in the graph)."""
    zero = torch.zeros((), dtype=boxes.dtype)
    x0 = torch.minimum(torch.maximum(boxes[:, 0], zero), w)
    y0 = torch.minimum(torch.maximum(boxes[:, 1], zero), h)
    x1 = torch.minimum(torch.maximum(boxes[:, 2], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[:, 3], zero), h)
    return torch.stack((x0, y0, x1, y1), dim=1)


class DensePoseTensorModel(nn.Module):
    """`forward(image (1, 3, H, W)) -> (boxes, scores, classes, coarse_segm, fine_segm, u, v)`.

    `model` is an eval-mode GeneralizedRCNN with DensePose on (float, or with quantized sub-modules)."""

    def __init__(self, model: nn.Module, size_divisibility: int = 32):
        super().__init__()
        rpn, roi = model.proposal_generator, model.roi_heads
        if not getattr(roi, "densepose_on", False):
            raise ValueError("Export needs MODEL.DENSEPOSE_ON")
        self.backbone = model.backbone
        self.rpn_head = rpn.rpn_head
        self.anchor_generator = rpn.anchor_generator
        self.rpn_in_features = list(rpn.in_features)
        self.rpn = rpn  # flatten/decode helpers (its head is the same module as self.rpn_head)
        self.roi_in_features = list(roi.in_features)
        self.box_pooler = roi.box_pooler
        self.box_head = roi.box_head
        self.box_predictor = roi.box_predictor
        self.densepose_pooler = roi.densepose_pooler
        self.decoder = roi.decoder
        self.densepose_head = roi.densepose_head
        self.densepose_predictor = roi.densepose_predictor
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1), persistent=False)
        self.size_divisibility = int(size_divisibility)
        self.pre_nms_topk = int(rpn.pre_nms_topk[False])
        self.post_nms_topk = int(rpn.post_nms_topk[False])
        self.rpn_nms_thresh = float(rpn.nms_thresh)
        self.rpn_min_box_size = float(rpn.min_box_size)
        p = roi.box_predictor
        self.score_thresh = float(p.test_score_thresh)
        self.box_nms_thresh = float(p.test_nms_thresh)
        self.detections_per_image = int(p.test_topk_per_image)

    # ------------------------------------------------------------------ stages
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.float() - self.pixel_mean) / self.pixel_std
        d = self.size_divisibility
        h, w = x.shape[-2], x.shape[-1]
        # padded size written as d * ceil(size / d), so the exporter can prove it is a multiple of d
        return F.pad(x, (0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h), value=0.0)

    def proposals(self, features: List[torch.Tensor], h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        logits, deltas = self.rpn_head(features)
        # float island: objectness / deltas leave an int8 head dequantized
        logits, deltas = self.rpn.flatten_predictions([x.float() for x in logits], [x.float() for x in deltas])
        box2box = self.rpn.box2box_transform
        boxes_all, scores_all, levels_all = [], [], []
        for level, (feature, scores, level_deltas) in enumerate(zip(features, logits, deltas)):
            k = torch.sym_min(scores.shape[1], self.pre_nms_topk)
            top_scores, idx = scores[0].topk(k)
            # decode the top-k anchors only (the eager RPN decodes all, then selects: same boxes)
            anchors = self.anchor_generator.anchors_at(level, feature, idx)
            boxes_all.append(box2box.apply_deltas(level_deltas[0][idx], anchors))
            scores_all.append(top_scores)
            levels_all.append(torch.full_like(idx, level))
        boxes = _clip(torch.cat(boxes_all), h, w)
        scores = torch.cat(scores_all)
        levels = torch.cat(levels_all)
        keep = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        keep = keep & ((boxes[:, 2] - boxes[:, 0]) > self.rpn_min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) > self.rpn_min_box_size)
        keep = keep.nonzero()[:, 0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.rpn_nms_thresh, max_keep=self.post_nms_topk)
        return boxes[keep]

    def detections(self, features: List[torch.Tensor], proposals: torch.Tensor, h: torch.Tensor, w: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.box_head(self.box_pooler(features, [proposals]))
        class_logits, deltas = self.box_predictor(x)
        class_logits, deltas = class_logits.float(), deltas.float()
        boxes = self.box_predictor.box2box_transform.apply_deltas(deltas, proposals)
        probs = F.softmax(class_logits, dim=-1)[:, :-1]
        num_classes = probs.shape[1]
        num_reg = boxes.shape[1] // 4
        boxes = _clip(boxes.reshape(-1, 4), h, w).reshape(-1, num_reg, 4)
        if num_reg == 1:
            boxes = boxes.expand(-1, num_classes, 4)
        valid = torch.isfinite(boxes).all(dim=2).all(dim=1) & torch.isfinite(probs).all(dim=1)
        mask = (probs > self.score_thresh) & valid[:, None]
        idx = mask.nonzero()
        boxes = boxes[idx[:, 0], idx[:, 1]]
        scores = probs[idx[:, 0], idx[:, 1]]
        classes = idx[:, 1]
        keep = batched_nms(boxes, scores, classes, self.box_nms_thresh, max_keep=self.detections_per_image)
        return boxes[keep], scores[keep], classes[keep]

    def densepose(self, features: List[torch.Tensor], boxes: torch.Tensor):
        dp_features = [self.decoder(features)] if self.decoder is not None else features
        x = self.densepose_head(self.densepose_pooler(dp_features, [boxes]))
        return tuple(t.float() for t in self.densepose_predictor.forward_tensors(x))

    def forward(self, image: torch.Tensor):
        x = self.preprocess(image)
        # image size as float scalars computed from the (symbolic) input shape
        h = torch.ones((), dtype=torch.float32) * image.shape[-2]
        w = torch.ones((), dtype=torch.float32) * image.shape[-1]
        feats = self.backbone(x)
        proposals = self.proposals([feats[f] for f in self.rpn_in_features], h, w)
        roi_features = [feats[f] for f in self.roi_in_features]
        boxes, scores, classes = self.detections(roi_features, proposals, h, w)
        coarse, fine, u, v = self.densepose(roi_features, boxes)
        return boxes, scores, classes, coarse, fine, u, v
