"""Int8 quantization of Mobile Parsing R-CNN with torchao PT2E (paper 3.4), QAT and PTQ.

What is quantized: the dense sub-networks, each captured with `torch.export` (dynamic batch and, where
relevant, dynamic H / W) and prepared with our XNNPACK-style quantizer (`_quantizer`, on torchao's public
PT2E quantizer API: uint8 activations, symmetric per-channel int8 weights):

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
import functools
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.export import Dim

from ..utils.fx_config import backed_size_oblivious

logger = logging.getLogger(__name__)

PART_NAMES = ("backbone", "rpn_head", "box_head", "box_predictor", "densepose_head", "densepose_predictor")


# ---------------------------------------------------------------------------------------------------------
# The quantizer, on torchao's public PT2E API only (torchao.quantization.pt2e / .quantizer)
#
# What it annotates is what torchao's reference XNNPACK quantizer (private, in torchao's testing package)
# annotates on our captured graphs, plus the transposed convs it leaves alone, so the int8 exports are the
# same (tests/test_quant_quantizer_api.py compares the prepared graphs with it while torchao still ships it):
#   conv (+BN in QAT) (+ReLU), linear (+ReLU), transposed conv (+BN in QAT) (+ReLU): input uint8 per-tensor,
#     weight int8 symmetric per output channel, bias float (no spec), output uint8 (after the ReLU / BN);
#   add, mul (+ReLU) of float tensors: inputs and output uint8 (python scalars become tensor constants first);
#   adaptive_avg_pool2d: output shares the input's quantization;
#   ReLU, max-pool, mean, flatten / view / permute / squeeze / slice right after an annotated output: the
#     same quantization as that output (the tensor stays in the int8 domain).
# Not annotated (float, quantized again by their consumer): cat (the reference only finds torch.cat through
# `source_fn_stack`, which non-strict torch.export does not record), upsampling, select / sum / div, ...
# ---------------------------------------------------------------------------------------------------------

_CONV_OPS = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default)  # plain conv annotation
# conv + ReLU (any conv overload)
_CONV_RELU_OPS = _CONV_OPS + (torch.ops.aten.conv1d.padding, torch.ops.aten.conv2d.padding,
                              torch.ops.aten.conv3d.default, torch.ops.aten.conv3d.padding)
_CONV_T_OPS = (torch.ops.aten.conv_transpose1d.default, torch.ops.aten.conv_transpose2d.input,
               torch.ops.aten.conv_transpose3d.input)
_RELU_OPS = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)
_ADD_OPS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
_MUL_OPS = (torch.ops.aten.mul.Tensor, torch.ops.aten.mul_.Tensor)
# ops whose output keeps its input's quantization when that input is a quantized output
_SHARING_OPS = (
    torch.ops.aten.relu.default, torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default,
    torch.ops.aten.max_pool2d.default, torch.ops.aten.mean.default, torch.ops.aten.mean.dim,
    torch.ops.aten.permute.default, torch.ops.aten.permute_copy.default, torch.ops.aten.squeeze.dim,
    torch.ops.aten.squeeze_copy.dim, torch.ops.aten.adaptive_avg_pool2d.default, torch.ops.aten.view_copy.default,
    torch.ops.aten.view.default, torch.ops.aten.slice_copy.Tensor, torch.ops.aten.flatten.using_ints)
_HISTC_MAX = 3.4028235e15  # torch.histc (HistogramObserver) fails above this: such constants stay float


def _is_call(n, targets) -> bool:
    return isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target in targets


# Weight ranges. ONNX Runtime's x86 int8 GEMM without VNNI (AVX2, AVX-512 before VNNI) adds pairs of
# uint8 x int8 products in int16 (vpmaddubsw), which saturates once 2 * 255 * |w| > 32767: with 8-bit weights
# a conv computed as a GEMM (every conv but depthwise, every linear) gives wrong outputs on such CPUs. 7-bit
# weights are exact on every CPU (ORT's `reduce_range`); depthwise convs have their own int32 kernel and keep
# the full range.
GEMM_WEIGHT_QMAX = 63
DEPTHWISE_WEIGHT_QMAX = 127


def is_depthwise_conv_weight(weight_shape, groups: int) -> bool:
    """A (non-transposed) conv whose output channel k reads input channel k only: ORT's depthwise kernel."""
    return groups > 1 and weight_shape[1] == 1 and weight_shape[0] == groups


class _QuantSpecs:
    """The quantization specs: activations uint8 asymmetric per tensor; weights int8 symmetric per output
    channel (axis 0, axis 1 for transposed convs), [-127, 127] for depthwise convs and [-63, 63] for every
    op ONNX Runtime computes as a GEMM (see `GEMM_WEIGHT_QMAX`); bias float. Observers (PTQ): histogram for
    activations, per-channel min / max for weights; QAT: fused moving-average fake-quantize, per channel for
    weights."""

    def __init__(self, is_qat: bool):
        from torchao.quantization.pt2e import (FakeQuantize, FusedMovingAvgObsFakeQuantize, HistogramObserver,
                                               MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver)
        from torchao.quantization.pt2e.quantizer import QuantizationSpec

        eps = 2 ** -12
        # activations as asymmetric UINT8 (weights symmetric per-channel INT8): u8 x s8 is the native VNNI /
        # ONNX Runtime x86 format; with int8 activations ORT rewrites Q/DQ pairs to uint8 only where it can,
        # and every conv left with mixed int8 / uint8 Q/DQ runs as dequantize -> float conv -> quantize
        act_ctr = (FusedMovingAvgObsFakeQuantize if is_qat else HistogramObserver).with_args(eps=eps)
        self.act = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                                    is_dynamic=False, observer_or_fake_quant_ctr=act_ctr)

        def weight(ch_axis: int, ctr, qmax: int = GEMM_WEIGHT_QMAX):
            return QuantizationSpec(dtype=torch.int8, quant_min=-qmax, quant_max=qmax,
                                    qscheme=torch.per_channel_symmetric, ch_axis=ch_axis, is_dynamic=False,
                                    observer_or_fake_quant_ctr=ctr)

        qat_kw = dict(eps=eps, observer=MovingAveragePerChannelMinMaxObserver)
        ctr = (FusedMovingAvgObsFakeQuantize.with_args(**qat_kw) if is_qat
               else PerChannelMinMaxObserver.with_args(eps=eps))
        self.weight = weight(0, ctr)
        self.weight_depthwise = weight(0, ctr, DEPTHWISE_WEIGHT_QMAX)
        # a transposed conv's weight is (C_in, C_out, k, k): per output channel is axis 1. For QAT the axis
        # must be bound in the constructor of a fake-quantize class that supports it: PT2E's prepare does
        # not pass the spec's `ch_axis` to fake-quantize classes and the fused one only does axis 0, so QAT
        # would observe per INPUT channel, which no int8 conv kernel computes (and the int8 deconv lowering
        # of the export could not keep)
        self.weight_t = weight(1, FakeQuantize.with_args(**qat_kw, ch_axis=1) if is_qat
                               else PerChannelMinMaxObserver.with_args(eps=eps, ch_axis=1))
        self.bias = None  # float


def _scalars_to_attrs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Python-number operands of aten add / mul become 0-d float tensor constants, so the add / mul can be
    annotated like one of two tensors."""
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            continue
        args = []
        for a in n.args:
            if not isinstance(a, torch.fx.Node):
                i = 0
                while hasattr(gm, f"_tensor_constant_{i}"):
                    i += 1
                name, value = f"_tensor_constant_{i}", torch.tensor(float(a))
                gm.register_buffer(name, value)
                with gm.graph.inserting_before(n):
                    a = gm.graph.get_attr(name)
                a.meta["val"] = n.meta["val"].fake_mode.from_tensor(value, static_shapes=True)
            args.append(a)
        n.args = tuple(args)
    gm.recompile()
    return gm


def _annotate_graph(gm: torch.fx.GraphModule, q: _QuantSpecs, is_qat: bool) -> None:
    """Annotate `gm` in place (see the block comment above). Patterns first (QAT: conv + BN (+ ReLU)), then
    single ops; a node belongs to at most one pattern (first come)."""
    from torch._subclasses import FakeTensor
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    KEY = "quantization_annotation"
    claimed = set()  # nodes (incl. weights / biases) of an annotated pattern

    def taken(nodes) -> bool:
        return any(n in claimed or KEY in n.meta for n in nodes)

    def annotate(node, inputs=None, output=None):
        node.meta[KEY] = QuantizationAnnotation(input_qspec_map=dict(inputs or {}), output_qspec=output)
        claimed.add(node)

    def single_user(n) -> bool:
        return len(n.users) == 1

    def weighted_inputs(op, weight_spec):
        """(partition, input map) of a conv / linear: input, weight, bias (if a node)."""
        partition, qmap = [op, op.args[1]], {op.args[0]: q.act, op.args[1]: weight_spec}
        bias = op.args[2] if len(op.args) > 2 else None
        if isinstance(bias, torch.fx.Node):
            qmap[bias] = q.bias
            partition.append(bias)
        return partition, qmap

    def weight_spec(op):
        if op.target in _CONV_T_OPS:
            return q.weight_t
        if op.target in _CONV_RELU_OPS:  # every conv overload: (input, weight, bias, stride, padding, dilation, groups)
            groups = op.args[6] if len(op.args) > 6 else 1
            if is_depthwise_conv_weight(op.args[1].meta["val"].shape, groups):
                return q.weight_depthwise
        return q.weight

    def op_then_relu(op_targets, relu):
        """relu(op(...)), op used by the ReLU only: the op, or None."""
        op = relu.args[0] if relu.args else None
        return op if _is_call(op, op_targets) and single_user(op) else None

    nodes = lambda: list(gm.graph.nodes)  # noqa: E731

    # QAT: conv (+ transposed) -> batch_norm (-> ReLU): PT2E's QAT prepare rewrites these into a conv with a
    # simulated BN fold; the conv's input / weight are annotated on the conv, the output after BN / ReLU.
    # The conv must feed only the BN (and the BN only the ReLU); the BN's other operands are free.
    if is_qat:
        gm.graph.eliminate_dead_code()
        gm.recompile()
        for conv_targets in ((torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default),
                             (torch.ops.aten.conv_transpose1d.default, torch.ops.aten.conv_transpose2d.input)):
            for with_relu in (True, False):
                for n in nodes():
                    if with_relu:
                        bn = op_then_relu((torch.ops.aten.batch_norm.default,), n) if _is_call(n, _RELU_OPS) else None
                    else:
                        bn = n if _is_call(n, (torch.ops.aten.batch_norm.default,)) else None
                    if bn is None or not _is_call(bn.args[0], conv_targets) or not single_user(bn.args[0]):
                        continue
                    conv = bn.args[0]
                    partition, qmap = weighted_inputs(conv, weight_spec(conv))
                    if taken(partition):
                        continue
                    annotate(conv, qmap)
                    annotate(n, output=q.act)
                    claimed.update(partition)

    # linear (+ ReLU)
    for n in nodes():
        lin = op_then_relu((torch.ops.aten.linear.default,), n) if _is_call(n, _RELU_OPS) else None
        if lin is None:
            continue
        partition, qmap = weighted_inputs(lin, weight_spec(lin))
        if taken([n] + partition):
            continue
        annotate(lin, qmap)
        annotate(n, output=q.act)
        claimed.update(partition)
    for n in nodes():
        if not _is_call(n, (torch.ops.aten.linear.default,)) or taken([n]):
            continue
        partition, qmap = weighted_inputs(n, weight_spec(n))
        annotate(n, qmap, q.act)
        claimed.update(partition)

    # conv (+ ReLU), transposed conv + ReLU
    def conv_relu(conv_targets):
        for n in nodes():
            conv = op_then_relu(conv_targets, n) if _is_call(n, _RELU_OPS) else None
            if conv is None:
                continue
            partition, qmap = weighted_inputs(conv, weight_spec(conv))
            if taken([n] + partition):
                continue
            annotate(conv, qmap)
            annotate(n, output=q.act)
            claimed.update(partition)

    conv_relu(_CONV_RELU_OPS)
    for n in nodes():
        if not _is_call(n, _CONV_OPS):
            continue
        partition, qmap = weighted_inputs(n, weight_spec(n))
        if taken(partition):
            continue
        annotate(n, qmap, q.act)
        claimed.update(partition)
    conv_relu(_CONV_T_OPS)

    # adaptive average pooling: output quantized like its input (a quantized output, or quantized here)
    for n in nodes():
        if not _is_call(n, (torch.ops.aten.adaptive_avg_pool2d.default,)) or taken([n]):
            continue
        x = n.args[0]
        ann = x.meta.get(KEY)
        x_spec = SharedQuantizationSpec(x) if ann is not None and ann.output_qspec is not None else q.act
        annotate(n, {x: x_spec}, SharedQuantizationSpec((x, n)))

    # add / mul (+ ReLU) of float tensors
    def is_float_operand(a) -> bool:
        if a.op == "get_attr":  # a constant too large for the histogram observer
            path, _, name = str(a.target).rpartition(".")
            t = getattr(gm.get_submodule(path), name)
            if isinstance(t, torch.Tensor) and t.numel() == 1 and abs(t.item()) > _HISTC_MAX:
                return False
        val = a.meta.get("val")
        return isinstance(val, FakeTensor) and val.dtype == torch.float32

    def binary_inputs(op):
        """input map of an add / mul (uint8 for each tensor operand), or None if an operand is not a float
        tensor."""
        qmap = {}
        for a in op.args[:2]:
            if isinstance(a, torch.fx.Node):
                if not is_float_operand(a):
                    return None
                qmap[a] = q.act
        return qmap

    for targets in (_ADD_OPS, _MUL_OPS):
        for n in nodes():
            op = op_then_relu(targets, n) if _is_call(n, _RELU_OPS) else None
            if op is None or taken([n, op]):
                continue
            qmap = binary_inputs(op)
            if qmap is None:
                continue
            annotate(op, qmap)
            annotate(n, output=q.act)
        for n in nodes():
            if not _is_call(n, targets) or taken([n]):
                continue
            qmap = binary_inputs(n)
            if qmap is not None:
                annotate(n, qmap, q.act)

    # quantization-preserving ops right after a quantized output share its quantization (in graph order, so
    # chains like ReLU -> max-pool -> flatten stay int8)
    for n in nodes():
        if not _is_call(n, _SHARING_OPS) or not n.args or not isinstance(n.args[0], torch.fx.Node) or taken([n]):
            continue
        prev = n.args[0]
        ann = prev.meta.get(KEY)
        if ann is None or ann.output_qspec is None:
            continue
        shared = SharedQuantizationSpec(prev)
        annotate(n, {prev: shared}, shared)

    # transposed convs not in a pattern (the chart predictor's deconvs): like a conv, weight axis 1. After
    # the sharing step above, as in the reference quantizer extended here: nothing after them shares their
    # quantization
    for n in nodes():
        if not _is_call(n, _CONV_T_OPS):
            continue
        partition, qmap = weighted_inputs(n, weight_spec(n))
        if taken(partition):
            continue
        annotate(n, qmap, q.act)
        claimed.update(partition)


@functools.lru_cache(maxsize=None)
def _quantizer_class():
    from torchao.quantization.pt2e.quantizer import Quantizer

    class DensePoseQuantizer(Quantizer):
        """PT2E quantizer of the dense sub-networks (see the block comment above `_QuantSpecs`)."""

        def __init__(self, is_qat: bool = False):
            super().__init__()
            self.is_qat = is_qat
            self.specs = _QuantSpecs(is_qat)

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return _scalars_to_attrs(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            _annotate_graph(model, self.specs, self.is_qat)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return DensePoseQuantizer


def _quantizer(is_qat: bool):
    """The PT2E quantizer of the dense sub-networks: symmetric per-channel int8 weights, asymmetric uint8
    activations (XNNPACK-style, written on torchao's public quantizer API)."""
    return _quantizer_class()(is_qat)


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
    from torchao.quantization.pt2e.utils import fold_bn_weights_into_conv_node

    folded = 0
    fused_weights = set()
    for n in list(gm.graph.nodes):
        if getattr(n, "_erased", False) or n.op != "call_function" or n.target is not torch.ops.aten.batch_norm.default:
            continue
        training = n.args[5] if len(n.args) > 5 else n.kwargs.get("training", False)
        conv = n.args[0]
        if training or not _is_call(conv, _CONV_RELU_OPS + _CONV_T_OPS) or len(conv.users) != 1:
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
        ch = roi.decoder.output_shape.channels if getattr(roi.decoder, "output_shape", None) else int(
            next(iter(model.backbone.output_shape().values())).channels)
        return (torch.randn(3, ch, *r),), {"x": {0: n}}
    if kind == "densepose_predictor":
        r = roi.densepose_pooler.output_size
        return (torch.randn(3, roi.densepose_head.output_shape.channels, *r),), {"x": {0: n}}
    raise ValueError(kind)


def _capture(model: nn.Module, kind: str, module: nn.Module, train: bool) -> torch.fx.GraphModule:
    args, dynamic_shapes = _capture_args(model, kind, module)
    target = _PredictorTensors(module) if kind == "densepose_predictor" else module
    was_training = target.training
    target.train(train)
    try:
        # size-oblivious: no 0/1 specialisation, so batch 1, one RoI and 1-cell pyramid levels stay valid
        with backed_size_oblivious():
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
