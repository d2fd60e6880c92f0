"""GeneralizedRCNN: image -> backbone(+neck) -> proposals -> RoI heads (box + DensePose) -> results."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.batch_norm_folding import fold_batch_norms, folding_enabled
from ..layers.eager_threads import eager_cpu_inference
from ..postprocess import detector_postprocess
from ..structures import Instances
from .backbone import Backbone
from .proposal_generator import build_proposal_generator
from .registry import BACKBONE_REGISTRY, META_ARCH_REGISTRY, get_from_registry
from .roi_heads import build_roi_heads


def normalize_and_pad(images: List[torch.Tensor], pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                      size_divisibility: int) -> torch.Tensor:
    """(C, Hi, Wi) images (uint8 or float) -> (N, C, H, W) float batch: `(image - mean) / std`, zero-padded
    right / bottom to the largest size rounded up to a multiple of `size_divisibility`.

    The one normalisation of the eager model and the exported graph. Sizes stay symbolic for one image
    (no `int()` on a shape; the padded size is written as d * ceil(size / d), which the exporter can prove
    to be a multiple of d)."""
    mean, std = pixel_mean.view(-1, 1, 1), pixel_std.view(-1, 1, 1)
    images = [(im.float() - mean) / std for im in images]
    max_h = max(im.shape[-2] for im in images)
    max_w = max(im.shape[-1] for im in images)
    if size_divisibility > 1:
        d = size_divisibility
        max_h = (max_h + d - 1) // d * d
        max_w = (max_w + d - 1) // d * d
    return torch.stack([F.pad(im, (0, max_w - im.shape[-1], 0, max_h - im.shape[-2]), value=0.0) for im in images])


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    def __init__(self, *, backbone: Backbone, proposal_generator: nn.Module, roi_heads: nn.Module,
                 pixel_mean: List[float], pixel_std: List[float], input_format: str = "BGR",
                 channels_last_inference: bool = False, fold_batch_norm_inference: bool = False):
        """channels_last_inference: eager CPU inference feeds the network a channels-last image (see
        `inference`). fold_batch_norm_inference: eager CPU inference runs the backbone with its batch norms
        folded into their convs (`layers.batch_norm_folding`, set up at the first such inference)."""
        super().__init__()
        self.channels_last_inference = channels_last_inference
        self.fold_batch_norm_inference = fold_batch_norm_inference
        self._batch_norms_folded = False
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> "GeneralizedRCNN":
        if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB, got '{cfg.INPUT.FORMAT}'")
        backbone = get_from_registry(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME")(cfg, None)
        shapes = backbone.output_shape()
        return cls(backbone=backbone, proposal_generator=build_proposal_generator(cfg, shapes),
                   roi_heads=build_roi_heads(cfg, shapes), pixel_mean=cfg.MODEL.PIXEL_MEAN,
                   pixel_std=cfg.MODEL.PIXEL_STD, input_format=cfg.INPUT.FORMAT,
                   channels_last_inference=cfg.TEST.CHANNELS_LAST,
                   fold_batch_norm_inference=cfg.TEST.FOLD_BATCH_NORM)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        images = [x["image"].to(self.device) for x in batched_inputs]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return normalize_and_pad(images, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility), sizes

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses. Inference: per image {"instances": Instances} in original pixels.

        Each input: {"image": (3, H, W) tensor in INPUT.FORMAT, optional "height"/"width" (output size),
        and in training "instances" with gt_boxes, gt_classes[, gt_densepose]}."""
        if not self.training:
            return self.inference(batched_inputs)
        images, sizes = self.preprocess_image(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("Training inputs need 'instances' with the ground truth")
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images)
        proposals, proposal_losses = self.proposal_generator(sizes, features, targets)
        _, detector_losses = self.roi_heads(sizes, features, proposals, targets)
        return {**detector_losses, **proposal_losses}

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True) -> List[Dict[str, Instances]]:
        images, sizes = self.preprocess_image(batched_inputs)
        if self.channels_last_inference and images.device.type == "cpu":
            # mkldnn's CPU convolutions run faster on a channels-last input (conv outputs keep their input's
            # layout): B 0.83x, R-50 0.91x. Values change by float rounding, which a deep random-init R-50
            # amplifies past detectron2's outputs at 1e-4, hence a config key (TEST.CHANNELS_LAST). Training
            # and the exported graph (export.tensor_model) keep the contiguous layout.
            images = images.contiguous(memory_format=torch.channels_last)
        if (self.fold_batch_norm_inference and not self._batch_norms_folded and folding_enabled()
                and eager_cpu_inference(images) and not any(m.training for m in self.backbone.modules())):
            # once: the pairs are found and checked on this image (the folded weights follow later weights)
            fold_batch_norms(self.backbone, lambda: self.backbone(images))
            self._batch_norms_folded = True
        features = self.backbone(images)
        proposals, _ = self.proposal_generator(sizes, features, None)
        results, _ = self.roi_heads(sizes, features, proposals, None)
        if not do_postprocess:
            return [{"instances": r} for r in results]
        outputs = []
        for r, inp, size in zip(results, batched_inputs, sizes):
            h, w = inp.get("height", size[0]), inp.get("width", size[1])
            outputs.append({"instances": detector_postprocess(r, h, w)})
        return outputs


def build_model(cfg) -> nn.Module:
    """The model named by MODEL.META_ARCHITECTURE, on MODEL.DEVICE, randomly initialised (load weights with
    `densepose_fnl.checkpoint.DensePoseCheckpointer`)."""
    model = get_from_registry(META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, "MODEL.META_ARCHITECTURE"
                              ).from_config(cfg)
    return model.to(torch.device(cfg.MODEL.DEVICE))
