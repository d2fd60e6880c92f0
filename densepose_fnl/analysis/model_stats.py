"""Parameter counts per block, state-dict size and compute (fvcore flop counting) of a model.

fvcore counts one "flop" per multiply-accumulate, so the figures below are GMACs, the unit of the
paper's Table 1 and of the authors' own measurements. Compute of an R-CNN depends on the data; we count
it as: dense part (backbone + neck + RPN head) at the input size, plus the box head once per RPN
proposal (POST_NMS_TOPK_TEST of them) plus the DensePose head and predictor once per person (K).
"""
import io
import logging
from typing import Dict, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

logger = logging.getLogger(__name__)


def count_parameters(module: nn.Module) -> int:
    """All nn.Parameters (frozen ones included; FrozenBN statistics are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters())


def parameters_by_block(model: nn.Module) -> Dict[str, int]:
    backbone = model.backbone
    bottom_up = getattr(backbone, "bottom_up", backbone)
    roi = model.roi_heads
    blocks = {
        "backbone": count_parameters(bottom_up),
        "neck": count_parameters(backbone) - count_parameters(bottom_up),
        "rpn": count_parameters(model.proposal_generator),
        "box_head": count_parameters(roi.box_head) + count_parameters(roi.box_predictor),
        "densepose_head": 0,
        "densepose_predictor": 0,
    }
    if roi.densepose_on:
        decoder = roi.decoder if roi.decoder is not None else nn.Module()
        blocks["densepose_head"] = count_parameters(roi.densepose_head) + count_parameters(decoder)
        blocks["densepose_predictor"] = count_parameters(roi.densepose_predictor)
    if getattr(roi, "embedder", None) is not None:  # CSE: the mesh vertex embedders (their features are buffers)
        blocks["embedder"] = count_parameters(roi.embedder)
    return blocks


def state_dict_bytes(model: nn.Module) -> Tuple[int, int]:
    """(bytes of all state-dict tensors, bytes of the file torch.save writes)."""
    sd = model.state_dict()
    raw = sum(t.numel() * t.element_size() for t in sd.values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    return raw, buf.getbuffer().nbytes


def _gmacs(module: nn.Module, inputs) -> float:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total() / 1e9


class _DensePoseBranch(nn.Module):
    def __init__(self, roi_heads):
        super().__init__()
        self.head, self.predictor = roi_heads.densepose_head, roi_heads.densepose_predictor

    def forward(self, x):
        return self.predictor.forward_tensors(self.head(x))


class _DenseBranch(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.backbone, self.rpn_head, self.in_features = model.backbone, model.proposal_generator.rpn_head, \
            model.proposal_generator.in_features

    def forward(self, x):
        feats = self.backbone(x)
        logits, deltas = self.rpn_head([feats[f] for f in self.in_features])
        return tuple(logits) + tuple(deltas)


@torch.no_grad()
def compute_gmacs(model: nn.Module, height: int, width: int, num_proposals: int, num_people: int) -> Dict[str, float]:
    model = model.eval()
    div = max(model.backbone.size_divisibility, 1)
    h, w = (height + div - 1) // div * div, (width + div - 1) // div * div
    dense = _gmacs(_DenseBranch(model), (torch.zeros(1, 3, h, w),))
    roi = model.roi_heads
    res_box = roi.box_pooler.output_size
    in_ch = model.backbone.output_shape()[roi.in_features[0]].channels
    box_per_roi = _gmacs(nn.Sequential(roi.box_head), (torch.zeros(1, in_ch, *res_box),))
    box_per_roi += _gmacs(roi.box_predictor, (torch.zeros(1, in_ch * res_box[0] * res_box[1])
                                              if not roi.box_head.conv_norm_relus and not roi.box_head.fcs
                                              else roi.box_head(torch.zeros(1, in_ch, *res_box)),))
    dp_per_roi = 0.0
    if roi.densepose_on:
        res_dp = roi.densepose_pooler.output_size
        dp_in = roi.densepose_head.ASPP.convs[0][0].in_channels if hasattr(roi.densepose_head, "ASPP") else \
            roi.densepose_head.body_conv_fcn1.in_channels
        dp_per_roi = _gmacs(_DensePoseBranch(roi), (torch.zeros(1, dp_in, *res_dp),))
    total = dense + box_per_roi * num_proposals + dp_per_roi * num_people
    return {
        "total": total,
        "backbone_neck_rpn_head": dense,
        "box_head_per_proposal": box_per_roi,
        "densepose_per_person": dp_per_roi,
        "num_proposals": num_proposals,
        "num_people": num_people,
        "input_size": [height, width],
        "padded_size": [h, w],
        "unit": "GMACs (fvcore counts one flop per multiply-accumulate)",
    }
