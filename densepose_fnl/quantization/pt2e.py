"""Int8 quantization of Mobile Parsing R-CNN with torchao PT2E (paper 3.4), QAT and PTQ.

What is quantized: the dense sub-networks, each captured with `torch.export` (dynamic batch and, where
relevant, dynamic H / W) and prepared with an XNNPACK-style quantizer (int8 activations, symmetric
per-channel int8 weights):

  backbone        timm features (pre-hook feature collection) + BiFPN     image -> {p2..p6}
  rpn_head        shared 3x3 conv + objectness / delta 1x1 convs          [p2..p6] -> logits, deltas
  box_head        2 x conv3x3 + ReLU on 7x7 RoI features
  box_predictor   class / box linear layers
  densepose_head  ASPP + stacked convs on 32x32 RoI features
  densepose_predictor  4 transposed convs (+ up-sampling)

Every captured graph takes float tensors and returns float tensors: its input is quantized on entry and
its outputs dequantized on exit. That gives exactly the paper's float islands: RPN logits / deltas are
float before anchor decoding and NMS; RoI pooling runs on dequantized features and the pooled features
are re-quantized by the head's graph; box decoding, NMS and DensePose post-processing stay float.

Fusion: conv + BN (+ ReLU) is fused by PT2E on the graph (QAT: BN kept as a simulated fold with its
statistics; PTQ: folded). Frozen BN (FrozenBatchNorm2d, constant statistics) is folded into the
preceding conv before preparation so QAT never turns it back into a batch-statistics BN.

Hooks: timm's `feature_location="expansion"` collects features with forward PRE-hooks on `conv_pwl`.
`torch.export` runs the module's Python, hooks included, so each collected tensor becomes an ordinary
graph node (the input of that conv) and a graph output; fusion and observer insertion are graph
rewrites that keep every node's users, so the hooked features survive fusion, QAT preparation and
conversion by construction (no eager-mode hook re-wiring, which is what the paper had to build).

The wrapped sub-modules keep the attributes / methods of the float modules (`output_shape`,
`box_predictor.losses` / `.inference`, `densepose_predictor.forward_tensors`, ...), so the resulting
model keeps GeneralizedRCNN's training forward (list of dicts -> loss dict) and inference forward.
"""
import copy
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.export import Dim

logger = logging.getLogger(__name__)

PART_NAMES = ("backbone", "rpn_head", "box_head", "box_predictor", "densepose_head", "densepose_predictor")


def _quantizer(is_qat: bool):
    """XNNPACK-style quantizer: symmetric per-channel int8 weights, asymmetric uint8 activations (torchao keeps
    it under torchao.testing; it is the reference one), extended to plain transposed convs (the chart
    predictor's deconvs, which it only handles when a ReLU follows): weights per output channel (axis 1 of a
    transposed-conv weight), uint8 activations."""
    import dataclasses

    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.testing.pt2e import _xnnpack_quantizer_utils as U

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    # activations as asymmetric UINT8 (weights stay symmetric per-channel INT8): u8 x s8 is the native
    # VNNI / ONNX Runtime x86 format; with int8 activations ORT rewrites Q/DQ pairs to uint8 only where it
    # can, and every conv left with mixed int8 / uint8 Q/DQ runs as dequantize -> float conv -> quantize
    u8 = dict(dtype=torch.uint8, quant_min=0, quant_max=255)
    config = dataclasses.replace(config, input_activation=dataclasses.replace(config.input_activation, **u8),
                                 output_activation=dataclasses.replace(config.output_activation, **u8))

    from torchao.quantization.pt2e import FakeQuantize

    weight_spec = U.get_weight_qspec(config)
    # a transposed conv's weight is (C_in, C_out, k, k): per output channel is axis 1. For QAT the axis must be
    # bound in the constructor of a fake-quantize class that supports it: torchao drops `ch_axis` for
    # fake-quantize classes and the default fused one only does axis 0, so QAT would observe per INPUT
    # channel, which no int8 conv kernel computes (and the int8 deconv lowering of the export could not keep)
    ctr = weight_spec.observer_or_fake_quant_ctr.p  # functools.partial(class, **kwargs)
    cls = FakeQuantize if is_qat else ctr.func
    transposed_weight_spec = dataclasses.replace(
        weight_spec, ch_axis=1, observer_or_fake_quant_ctr=cls.with_args(**{**ctr.keywords, "ch_axis": 1}))

    class _DensePoseQuantizer(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target is not torch.ops.aten.conv_transpose2d.input:
                    continue
                partition = [n, n.args[1]] + ([n.args[2]] if len(n.args) > 2 and n.args[2] is not None else [])
                if U._is_annotated(partition):  # annotated by a base pattern: only its weight axis is fixed
                    ann = n.meta.get("quantization_annotation")
                    if ann is not None and n.args[1] in ann.input_qspec_map:
                        ann.input_qspec_map[n.args[1]] = transposed_weight_spec
                    continue
                qmap = {n.args[0]: U.get_input_act_qspec(config), n.args[1]: transposed_weight_spec}
                if len(partition) > 2:
                    qmap[n.args[2]] = U.get_bias_qspec(config)
                n.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=qmap, output_qspec=U.get_output_act_qspec(config), _annotated=True)
                U._mark_nodes_as_annotated(partition)
            return model

    return _DensePoseQuantizer().set_global(config)


def unshare_parameters(gm: torch.fx.GraphModule) -> int:
    """Give every user of a multiply-used parameter its own `get_attr` node (same tensor).

    The RPN head applies ONE 3x3 conv to all pyramid levels; PT2E annotates a weight node once, so the
    convs of levels 2..5 would stay float. With one node per use every level's conv is quantized; the
    int8 copies are identical and deduplicated when the ONNX file is written."""
    count = 0
    for n in list(gm.graph.nodes):
        if n.op != "get_attr" or len(n.users) < 2:
            continue
        for user in list(n.users)[1:]:
            with gm.graph.inserting_before(user):
                clone = gm.graph.get_attr(n.target)
            clone.meta = dict(n.meta)
            user.replace_input_with(n, clone)
            count += 1
    gm.recompile()
    return count


def fold_frozen_batchnorm(gm: torch.fx.GraphModule) -> int:
    """Fold inference-mode batch norms (training=False, i.e. FrozenBatchNorm2d) into the conv feeding
    them, in an exported graph. Trainable BN (training=True in a QAT capture) is left to PT2E."""
    from torchao.quantization.pt2e.utils import _is_conv_or_conv_transpose_node, fold_bn_weights_into_conv_node

    folded = 0
    fused_weights = set()
    for n in list(gm.graph.nodes):
        if getattr(n, "_erased", False) or n.op != "call_function" or n.target is not torch.ops.aten.batch_norm.default:
            continue
        training = n.args[5] if len(n.args) > 5 else n.kwargs.get("training", False)
        conv = n.args[0]
        if training or not _is_conv_or_conv_transpose_node(conv) or len(conv.users) != 1:
            continue
        weight = conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        fold_bn_weights_into_conv_node(conv, weight, bias, n, gm, weight in fused_weights)
        fused_weights.add(weight)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded


class _PredictorTensors(nn.Module):
    """Capture target for the chart predictor: its tensor method instead of the dataclass forward."""

    def __init__(self, predictor: nn.Module):
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor):
        return self.predictor.forward_tensors(x)


class QuantizedModule(nn.Module):
    """A float sub-module's replacement: `forward` runs the captured (prepared or converted) graph;
    other attributes and methods are looked up on the float module (kept outside the module tree, so its
    parameters are not the model's any more). Empty batches (no RoIs) are run as one zero RoI, sliced."""

    def __init__(self, float_module: nn.Module, gm: torch.fx.GraphModule, kind: str, batched: bool = True):
        super().__init__()
        self.gm = gm
        self.kind = kind
        self.batched = batched
        self.__dict__["float_module"] = float_module

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["float_module"], name)

    def train(self, mode: bool = True):
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        self.training = mode
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.gm)
        return self

    def _run(self, *args):
        if self.batched and not torch.compiler.is_exporting():
            x = args[0]
            if x.shape[0] == 0:  # RoI heads with no RoI in this batch
                out = self.gm(x.new_zeros((1,) + tuple(x.shape[1:])))
                return tuple(o[:0] for o in out) if isinstance(out, (tuple, list)) else out[:0]
        return self.gm(*args)

    def forward(self, *args):
        out = self._run(*args)
        if self.kind == "densepose_predictor":
            return self.__dict__["float_module"].make_output(out)
        if self.kind in ("rpn_head", "box_predictor"):
            return tuple(out) if self.kind == "box_predictor" else (list(out[0]), list(out[1]))
        return out

    def forward_tensors(self, x: torch.Tensor):
        if self.kind != "densepose_predictor":
            raise AttributeError("forward_tensors")
        return tuple(self._run(x))


def _parts(model: nn.Module) -> List[Tuple[str, nn.Module, nn.Module, str]]:
    """(attribute path, owner, float module, kind) of every dense sub-network."""
    rpn, roi = model.proposal_generator, model.roi_heads
    parts = [("backbone", model, model.backbone, "backbone"), ("rpn_head", rpn, rpn.rpn_head, "rpn_head"),
             ("box_head", roi, roi.box_head, "box_head"), ("box_predictor", roi, roi.box_predictor, "box_predictor")]
    if getattr(roi, "densepose_on", False):
        parts += [("densepose_head", roi, roi.densepose_head, "densepose_head"),
                  ("densepose_predictor", roi, roi.densepose_predictor, "densepose_predictor")]
    return parts


def _capture_args(model: nn.Module, kind: str, module: nn.Module):
    """Example inputs (batch 2, generic sizes) and dynamic shapes for one part."""
    n = Dim("n", min=1, max=4096)
    roi = model.roi_heads
    if kind == "backbone":
        a, b = Dim("a", min=1, max=128), Dim("b", min=1, max=128)
        return (torch.randn(2, 3, 128, 160),), {"x": {0: n, 2: 32 * a, 3: 32 * b}}
    if kind == "rpn_head":
        shapes = model.backbone.output_shape()
        feats, dyn = [], []
        for i, f in enumerate(model.proposal_generator.in_features):
            s = shapes[f]
            size = max(128 // s.stride, 2)
            feats.append(torch.randn(2, s.channels, size + 2, size + 3))
            dyn.append({0: n, 2: Dim(f"h{i}", min=1, max=1024), 3: Dim(f"w{i}", min=1, max=1024)})
        return (feats,), {"features": dyn}
    if kind in ("box_head", "box_predictor"):
        r = roi.box_pooler.output_size
        if kind == "box_head":
            shape = (int(next(iter(model.backbone.output_shape().values())).channels),) + tuple(r)
        else:
            o = roi.box_head.output_shape
            shape = (o.channels,) + ((o.height, o.width) if o.height else ())
        return (torch.randn(3, *shape),), {"x": {0: n}}
    if kind == "densepose_head":
        r = roi.densepose_pooler.output_size
        ch = roi.decoder.out_channels if getattr(roi.decoder, "out_channels", None) else int(
            next(iter(model.backbone.output_shape().values())).channels)
        return (torch.randn(3, ch, *r),), {"x": {0: n}}
    if kind == "densepose_predictor":
        r = roi.densepose_pooler.output_size
        return (torch.randn(3, roi.densepose_head.n_out_channels, *r),), {"x": {0: n}}
    raise ValueError(kind)


def _size_oblivious():
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(backed_size_oblivious=True)


def _capture(model: nn.Module, kind: str, module: nn.Module, train: bool) -> torch.fx.GraphModule:
    args, dynamic_shapes = _capture_args(model, kind, module)
    target = _PredictorTensors(module) if kind == "densepose_predictor" else module
    was_training = target.training
    target.train(train)
    try:
        # size-oblivious: no 0/1 specialisation, so batch 1, one RoI and 1-cell pyramid levels stay valid
        with _size_oblivious():
            ep = torch.export.export(target, args, dynamic_shapes=dynamic_shapes, strict=False)
    finally:
        target.train(was_training)
    gm = ep.module()
    fold_frozen_batchnorm(gm)
    unshare_parameters(gm)
    return gm


def _init_weight_observers(gm: torch.fx.GraphModule, args) -> None:
    """Run the prepared graph once with only the per-channel (weight) observers enabled, so their
    buffers get their final (C,) shapes now: checkpoints of the QAT model then load into a freshly built
    one. Activation observers are untouched (no statistics of the example input are recorded)."""
    from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase

    def per_channel(m) -> bool:
        obs = getattr(m, "activation_post_process", m)
        return getattr(obs, "ch_axis", None) is not None and "PerChannel" in type(obs).__name__

    disabled = []
    for m in gm.modules():
        if isinstance(m, FakeQuantizeBase) and not per_channel(m) and bool(m.observer_enabled[0]):
            m.disable_observer()
            disabled.append(m)
    was_training = gm.training
    try:
        with torch.no_grad():
            if not any(isinstance(m, FakeQuantizeBase) for m in gm.modules()):  # PTQ: observers only
                return
            from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

            move_exported_model_to_eval(gm)
            gm(*args)
            if was_training:
                move_exported_model_to_train(gm)
    finally:
        for m in disabled:
            m.enable_observer()


def _quantize_parts(model: nn.Module, is_qat: bool, parts: Optional[Sequence[str]] = None) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    selected = set(parts or PART_NAMES)
    unknown = selected - set(PART_NAMES)
    if unknown:
        raise ValueError(f"Unknown quantizable parts {sorted(unknown)}; choose from {PART_NAMES}")
    for attr, owner, module, kind in _parts(model):
        if kind not in selected:
            continue
        if isinstance(module, QuantizedModule):
            raise ValueError(f"'{attr}' is already quantized")
        gm = _capture(model, kind, module, train=is_qat)
        gm = (prepare_qat_pt2e if is_qat else prepare_pt2e)(gm, _quantizer(is_qat))
        if is_qat:
            _init_weight_observers(gm, _capture_args(model, kind, module)[0])
        wrapped = QuantizedModule(module, gm, kind, batched=kind != "rpn_head")
        setattr(owner, attr, wrapped)
        logger.info("quantization: prepared %s (%s)", attr, "QAT" if is_qat else "PTQ")
    return model


def build_qat_model(cfg, float_model: nn.Module, parts: Optional[Sequence[str]] = None) -> nn.Module:
    """A copy of `float_model` whose dense sub-networks are QAT-prepared (fake-quantized, conv+BN fused).

    Same forward API as GeneralizedRCNN (training: list of dicts -> loss dict). Train it with the usual
    solver (smaller LR, e.g. 0.1x of the float schedule), then `convert_qat_model`."""
    model = copy.deepcopy(float_model).cpu()
    was_training = model.training
    model = _quantize_parts(model, is_qat=True, parts=parts)
    model.train(was_training)
    return model.to(torch.device(cfg.MODEL.DEVICE)) if cfg is not None else model


def build_ptq_model(cfg, float_model: nn.Module, calibration_inputs: Iterable[List[Dict]],
                    parts: Optional[Sequence[str]] = None) -> nn.Module:
    """Post-training quantization: prepare, run the eval forward on `calibration_inputs` (lists of
    {"image": uint8 CHW} dicts) to set the observers, convert. Returns an eval-mode int8 model."""
    model = copy.deepcopy(float_model).cpu().eval()
    model = _quantize_parts(model, is_qat=False, parts=parts)
    model.eval()
    with torch.no_grad():
        for batch in calibration_inputs:
            model(batch)
    return convert_qat_model(model)


def convert_qat_model(model: nn.Module) -> nn.Module:
    """Replace every prepared graph by its converted (Q/DQ int8) graph, in place; returns the eval model."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    model = model.cpu()
    for m in list(model.modules()):
        if isinstance(m, QuantizedModule) and not getattr(m, "converted", False):
            m.train(False)
            m.gm = convert_pt2e(m.gm)
            m.__dict__["converted"] = True
    return model.eval()


def quantized_parts(model: nn.Module) -> Dict[str, str]:
    """{module path: state} of the quantized sub-networks ('prepared' or 'converted')."""
    return {name: ("converted" if m.__dict__.get("converted") else "prepared")
            for name, m in model.named_modules() if isinstance(m, QuantizedModule)}
