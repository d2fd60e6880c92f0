"""RoI heads: box branch on all pyramid levels, DensePose branch on the decoder output (P2 for Parsing
R-CNN). Training samples proposals and matches them to ground truth as detectron2's StandardROIHeads.
A CSE model also holds the mesh vertex embedders (`embedder`, detectron2's `roi_heads.embedder`)."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torchvision.ops import box_iou

from ...structures import Instances, ShapeSpec
from ..densepose.decoder import FinestLevelDecoder, PanopticFPNDecoder
from ..densepose.embedder import build_densepose_embedder
from ..densepose.heads import build_densepose_head
from ..densepose.predictor import build_densepose_predictor
from ..matcher import Matcher, subsample_labels
from ..poolers import ROIPooler
from ..registry import DENSEPOSE_LOSS_REGISTRY, ROI_BOX_HEAD_REGISTRY, ROI_HEADS_REGISTRY, get_from_registry
from .fast_rcnn import FastRCNNOutputLayers


def matched_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes1[i] with boxes2[i] (both (N, 4) XYXY)."""
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    return inter / (area1 + area2 - inter)


def _pooler_scales(input_shape: Dict[str, ShapeSpec], in_features: List[str]) -> List[float]:
    return [1.0 / input_shape[f].stride for f in in_features]


class DensePoseROIHeads(nn.Module):
    def __init__(
        self,
        *,
        in_features: List[str],
        num_classes: int,
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: FastRCNNOutputLayers,
        proposal_matcher: Matcher,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        proposal_append_gt: bool = True,
        densepose_pooler: Optional[ROIPooler] = None,
        densepose_decoder: Optional[nn.Module] = None,
        densepose_head: Optional[nn.Module] = None,
        densepose_predictor: Optional[nn.Module] = None,
        densepose_losses: Optional[nn.Module] = None,
        densepose_fg_iou_threshold: float = 0.7,
        embedder: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.proposal_matcher = proposal_matcher
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.densepose_on = densepose_head is not None
        if self.densepose_on:
            self.densepose_pooler = densepose_pooler
            self.decoder = densepose_decoder
            self.densepose_head = densepose_head
            self.densepose_predictor = densepose_predictor
            self.densepose_losses = densepose_losses
            self.densepose_fg_iou_threshold = densepose_fg_iou_threshold
        # after the DensePose blocks, as detectron2 (state-dict order); None for chart models
        self.embedder = embedder

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "DensePoseROIHeads":
        r = cfg.MODEL.ROI_HEADS
        in_features = list(r.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES {missing} are not backbone outputs {list(input_shape)}")
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise NotImplementedError("MODEL.MASK_ON / MODEL.KEYPOINT_ON: mask and keypoint heads are not supported")
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"RoI head input levels must have the same channels, got {channels}")
        in_channels = channels.pop()
        b = cfg.MODEL.ROI_BOX_HEAD
        box_pooler = ROIPooler(b.POOLER_RESOLUTION, _pooler_scales(input_shape, in_features), b.POOLER_SAMPLING_RATIO,
                               b.POOLER_TYPE)
        box_head_cls = get_from_registry(ROI_BOX_HEAD_REGISTRY, b.NAME, "MODEL.ROI_BOX_HEAD.NAME")
        box_head = box_head_cls.from_config(
            cfg, ShapeSpec(channels=in_channels, height=b.POOLER_RESOLUTION, width=b.POOLER_RESOLUTION))
        kwargs = dict(
            in_features=in_features,
            num_classes=r.NUM_CLASSES,
            box_pooler=box_pooler,
            box_head=box_head,
            box_predictor=FastRCNNOutputLayers.from_config(cfg, box_head.output_shape),
            proposal_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=False),
            batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
            positive_fraction=r.POSITIVE_FRACTION,
            proposal_append_gt=r.PROPOSAL_APPEND_GT,
        )
        if cfg.MODEL.DENSEPOSE_ON:
            kwargs.update(cls._densepose_from_config(cfg, input_shape, in_features, in_channels))
        return cls(**kwargs)

    @staticmethod
    def _densepose_from_config(cfg, input_shape, in_features, in_channels) -> dict:
        d = cfg.MODEL.ROI_DENSEPOSE_HEAD
        if d.DECODER_ON:
            scales = _pooler_scales(input_shape, in_features[:1])
            if d.DECODER_ISSIMPLE:
                decoder, head_in = FinestLevelDecoder(), in_channels
            else:
                decoder = PanopticFPNDecoder(input_shape, in_features, d.DECODER_NUM_CLASSES, d.DECODER_CONV_DIMS,
                                             d.DECODER_COMMON_STRIDE, d.DECODER_NORM)
                head_in = decoder.output_shape.channels
        else:
            scales, decoder, head_in = _pooler_scales(input_shape, in_features), None, in_channels
        head = build_densepose_head(cfg, head_in)
        predictor = build_densepose_predictor(cfg, head.output_shape.channels)
        embedder = build_densepose_embedder(cfg)
        if embedder is None and "embedding" in predictor.output_names:
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME '{d.PREDICTOR_NAME}' predicts surface "
                             "embeddings: MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS must give the mesh embedder(s)")
        losses = None
        if d.LOSS_NAME in DENSEPOSE_LOSS_REGISTRY:
            losses = DENSEPOSE_LOSS_REGISTRY.get(d.LOSS_NAME).from_config(cfg)
        return dict(
            densepose_pooler=ROIPooler(d.POOLER_RESOLUTION, scales, d.POOLER_SAMPLING_RATIO, d.POOLER_TYPE),
            densepose_decoder=decoder,
            densepose_head=head,
            densepose_predictor=predictor,
            densepose_losses=losses,
            densepose_fg_iou_threshold=d.FG_IOU_THRESHOLD,
            embedder=embedder,
        )

    # ------------------------------------------------------------------ training targets
    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        sampled = []
        for props, tgt in zip(proposals, targets):
            boxes = props.proposal_boxes
            if self.proposal_append_gt:
                boxes = torch.cat([boxes, tgt.gt_boxes.to(boxes)], dim=0)
            has_gt = len(tgt) > 0
            matched_idxs, matched_labels = self.proposal_matcher(box_iou(tgt.gt_boxes, boxes))
            if has_gt:
                gt_classes = tgt.gt_classes[matched_idxs]
                gt_classes[matched_labels == 0] = self.num_classes
                gt_classes[matched_labels == -1] = -1
            else:
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
            fg, bg = subsample_labels(gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
            idx = torch.cat([fg, bg], dim=0)
            out = Instances(props.image_size, proposal_boxes=boxes[idx], gt_classes=gt_classes[idx])
            if has_gt:
                target_idx = matched_idxs[idx]
                for name, value in tgt.get_fields().items():
                    if name != "gt_classes":
                        out.set(name, value[target_idx] if isinstance(value, torch.Tensor)
                                else [value[i] for i in target_idx.tolist()])
            else:
                out.gt_boxes = torch.zeros_like(boxes[idx])
            sampled.append(out)
        return sampled

    # ------------------------------------------------------------------ branches
    def box_predictions(self, features: List[torch.Tensor], boxes: List[torch.Tensor]
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(class logits, box deltas) of the RoIs `boxes` (one (R_i, 4) tensor per image, concatenated)."""
        return self.box_predictor(self.box_head(self.box_pooler(features, boxes)))

    def detect_single_image(self, features: List[torch.Tensor], proposal_boxes: torch.Tensor, height, width
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's (boxes, scores, classes) from its proposals, tensor-only (the exported graph's box branch;
        the eager `_forward_box` runs the same `inference_single_image` per image of a batch)."""
        predictions = self.box_predictions(features, [proposal_boxes])
        return self.box_predictor.inference_single_image(predictions, proposal_boxes, height, width)

    def _forward_box(self, features: List[torch.Tensor], proposals: List[Instances]):
        predictions = self.box_predictions(features, [p.proposal_boxes for p in proposals])
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        return self.box_predictor.inference(predictions, proposals)

    def _densepose_features(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        return [self.decoder(features)] if self.decoder is not None else features

    def densepose_predictions(self, features: List[torch.Tensor], boxes: List[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """The DensePose branch on the RoIs `boxes` (one (R_i, 4) tensor per image): the predictor's raw maps
        as float tensors (`forward_tensors`), named by its `output_names` (the chart maps, then any
        confidences). Eager inference, the exported graph and the int8 model all run this."""
        x = self.densepose_head(self.densepose_pooler(self._densepose_features(features), boxes))
        return tuple(t.float() for t in self.densepose_predictor.forward_tensors(x))

    def _forward_densepose_train(self, features: List[torch.Tensor], proposals: List[Instances]) -> Dict:
        if self.densepose_losses is None:
            registered = sorted(name for name, _ in DENSEPOSE_LOSS_REGISTRY)
            raise NotImplementedError(
                "No DensePose loss is registered for MODEL.ROI_DENSEPOSE_HEAD.LOSS_NAME; training is unavailable "
                f"(registered: {registered}; import densepose_fnl.modeling.losses before build_model)")
        selected = []
        for p in proposals:
            fg = (p.gt_classes >= 0) & (p.gt_classes != self.num_classes)
            p = p[fg]
            if len(p) and p.has("gt_densepose"):
                iou = matched_box_iou(p.gt_boxes, p.proposal_boxes)
                keep = (iou > self.densepose_fg_iou_threshold).tolist()
                keep = [i for i, ok in enumerate(keep) if ok and p.gt_densepose[i] is not None]
                p = p[torch.tensor(keep, dtype=torch.long)]
            else:
                p = p[torch.zeros(len(p), dtype=torch.bool)]
            selected.append(p)
        dp_features = self.densepose_pooler(self._densepose_features(features), [p.proposal_boxes for p in selected])
        outputs = self.densepose_predictor(self.densepose_head(dp_features))
        return self.densepose_losses(selected, outputs, embedder=self.embedder)

    def _forward_densepose_inference(self, features: List[torch.Tensor], instances: List[Instances]) -> None:
        outputs = self.densepose_predictor.make_output(
            self.densepose_predictions(features, [i.pred_boxes for i in instances]))
        start = 0
        for inst in instances:
            n = len(inst)
            inst.pred_densepose = outputs[start:start + n]
            start += n

    def forward(self, image_sizes: List[Tuple[int, int]], features: Dict[str, torch.Tensor],
                proposals: List[Instances], targets: Optional[List[Instances]] = None
                ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        features = [features[f] for f in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("RoI heads need targets in training")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            if self.densepose_on:
                losses.update(self._forward_densepose_train(features, proposals))
            return proposals, losses
        instances = self._forward_box(features, proposals)
        if self.densepose_on:
            self._forward_densepose_inference(features, instances)
        return instances, {}


for _name in ("DensePoseROIHeads", "MyDensePoseROIHeads", "StandardROIHeads"):
    ROI_HEADS_REGISTRY._do_register(_name, DensePoseROIHeads)


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    return get_from_registry(ROI_HEADS_REGISTRY, cfg.MODEL.ROI_HEADS.NAME, "MODEL.ROI_HEADS.NAME").from_config(
        cfg, input_shape)
