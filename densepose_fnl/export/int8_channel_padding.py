"""Zero-channel padding of an int8 (QDQ) ONNX graph so ONNX Runtime runs every conv on its fast int8 kernels.

Why: on x86, ONNX Runtime's symmetric int8 convolution kernels (MLAS "ConvSym", used for QLinearConv with
int8 weights of zero point 0, i.e. our export) take a depthwise conv only when its channel count is a
multiple of 16, and a dense conv only when its input channels are a multiple of 4. Any other conv falls
back to a generic kernel, 2-3x slower (`tools/benchmark_int8_kernels.py`). SPNASNet has 72- and
120-channel depthwise convs and a 3-channel stem; ORT's fp32 path pads channels internally (NCHWc
blocks of 16), its int8 path does not.

What: two graph rewrites, both exact (the added channels carry zeros through every padded node):
* depthwise: producer conv -> [Relu / Clip] -> Q -> DQ -> depthwise conv (C channels) -> [Relu / Clip] -> Q
  -> DQ -> consumer convs becomes the same chain with C' = ceil(C / 16) * 16 channels: the producer gets
  C' - C zero output filters (bias 0), the depthwise conv C' - C zero filters, every consumer zero input
  weights for the new channels. Zero in, zero bias, ReLU(0) = 0 and zero weights: the consumers' integer
  accumulators receive exactly nothing from the new channels.
* dense input: a group-1 conv with Cin % 4 != 0 fed by DequantizeLinear gets its quantized input padded
  with the zero point (a uint8 Pad before the DQ, so it dequantizes to 0) and zero input weights.
A chain is rewritten only when every node on it has exactly the consumers listed (nothing else reads the
tensors whose shape changes); anything else is left as it is. Weights stay int8; new initializers are made
for the padded tensors, so initializers shared with other nodes are untouched.
"""
import logging
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .onnx_graph import GraphEditor, nodes_uniquely_named

logger = logging.getLogger(__name__)

DEPTHWISE_MULTIPLE = 16  # MLAS ConvSym depthwise: channel count aligned to 16 on x86 (8 on ARM64)
INPUT_CHANNEL_MULTIPLE = 4  # MLAS ConvSym dense: input channels aligned to 4 (KernelInputChannelAlignment)
PASS_THROUGH_ACTIVATIONS = ("Relu", "Clip")  # f(0) = 0 for ReLU; Clip keeps 0 when its range holds 0


@dataclass
class PaddingReport:
    depthwise: int = 0  # depthwise convs padded (with their producers and consumers)
    dense_inputs: int = 0  # dense convs whose input channels were padded

    def __str__(self) -> str:
        return f"{self.depthwise} depthwise convs and {self.dense_inputs} conv inputs padded"


@dataclass
class _QdqConv:
    """A Conv whose weight is DequantizeLinear(int8 initializer, per-output-channel scale / zero point) and
    whose bias is a float initializer or absent: the form ORT fuses into QLinearConv."""

    node: object
    weight_dq: object
    weight: str
    scale: str
    zero_point: str
    bias: Optional[str]
    group: int
    out_channels: int
    in_channels: int  # per group

    def repad_weight(self, g: GraphEditor, axis: int, size: int) -> None:
        """Point the conv at a new DQ of its weight padded with zeros along `axis` (0: filters, 1: inputs)."""
        weight = g.padded(self.weight, axis, size, 0)
        scale, zp = self.scale, self.zero_point
        if axis == 0 and g.array(scale).ndim == 1:
            scale, zp = g.padded(scale, 0, size, 1.0), g.padded(zp, 0, size, 0)
        from onnx import helper

        out = g.unique(self.weight_dq.output[0])
        g.insert_before(self.node, helper.make_node("DequantizeLinear", [weight, scale, zp], [out],
                                                    name=g.unique("weight_dq"), axis=0))
        self.node.input[1] = out
        if axis == 0 and self.bias is not None:
            self.node.input[2] = g.padded(self.bias, 0, size, 0.0)


def _qdq_conv(g: GraphEditor, node) -> Optional[_QdqConv]:
    if node is None or node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    weight = g.int8_weight(node.input[1])
    if weight is None:
        return None
    dq, w, scale, _ = weight
    if w.ndim != 4 or (scale.ndim == 1 and g.attr(dq, "axis", 1) != 0):
        return None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and (bias not in g.inits or g.array(bias).dtype != np.float32):
        return None
    if g.attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return _QdqConv(node, dq, dq.input[0], dq.input[1], dq.input[2], bias, int(g.attr(node, "group", 1)),
                    int(w.shape[0]), int(w.shape[1]))


def _activation_then_q(g: GraphEditor, tensor: str):
    """tensor -> [Relu / Clip] -> QuantizeLinear, each the only consumer: (nodes, the Q) or None."""
    nodes = []
    node = g.single_consumer(tensor)
    if node is not None and node.op_type in PASS_THROUGH_ACTIVATIONS:
        if node.op_type == "Clip" and not _clip_keeps_zero(g, node):
            return None
        nodes.append(node)
        node = g.single_consumer(node.output[0])
    if node is None or node.op_type != "QuantizeLinear":
        return None
    return nodes, node


def _clip_keeps_zero(g: GraphEditor, node) -> bool:
    lo = g.array(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    hi = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return (lo is None or float(lo) <= 0.0) and (hi is None or float(hi) >= 0.0)


def _dequantized_consumers(g: GraphEditor, q) -> Optional[List]:
    """The nodes reading Q's output through per-tensor DequantizeLinear nodes, or None if anything else
    reads it (or a dequantized tensor is a graph output)."""
    dqs = g.only_consumers(q.output[0])
    if not dqs or any(d.op_type != "DequantizeLinear" or d.input[0] != q.output[0] for d in dqs):
        return None
    users = []
    for d in dqs:
        readers = g.only_consumers(d.output[0])
        if not readers:
            return None
        users += readers
    return users


def _pad_depthwise(g: GraphEditor, dw: _QdqConv, multiple: int) -> bool:
    c = dw.out_channels
    target = -(-c // multiple) * multiple
    if target == c or dw.group != c or dw.in_channels != 1:
        return False
    # upstream: producer conv -> [act] -> Q -> DQ -> dw (the dw is the only reader)
    dq_in = g.producer.get(dw.node.input[0])
    if dq_in is None or dq_in.op_type != "DequantizeLinear" or g.only_consumers(dq_in.output[0]) != [dw.node]:
        return False
    q_in = g.producer.get(dq_in.input[0])
    if q_in is None or q_in.op_type != "QuantizeLinear" or g.only_consumers(q_in.output[0]) != [dq_in]:
        return False
    source = g.producer.get(q_in.input[0])
    if source is not None and source.op_type in PASS_THROUGH_ACTIVATIONS:
        source = g.producer.get(source.input[0])
    producer = _qdq_conv(g, source)
    if producer is None or producer.group != 1 or producer.out_channels != c:
        return False
    # the producer's only path to the dw: [act (checked to keep 0)] -> q_in, each the only reader
    chain = _activation_then_q(g, producer.node.output[0])
    if chain is None or chain[1] is not q_in:
        return False
    # downstream: dw -> [act] -> Q -> DQ(s) -> group-1 convs reading it as their input
    chain = _activation_then_q(g, dw.node.output[0])
    if chain is None:
        return False
    users = _dequantized_consumers(g, chain[1])
    if users is None:
        return False
    consumers = [_qdq_conv(g, u) for u in users]
    if any(k is None or k.group != 1 or k.in_channels != c or g.producer.get(k.node.input[0]) is None
           or g.producer[k.node.input[0]].op_type != "DequantizeLinear" for k in consumers):
        return False
    producer.repad_weight(g, 0, target)
    dw.repad_weight(g, 0, target)
    g.set_int_attr(dw.node, "group", target)
    for k in consumers:
        k.repad_weight(g, 1, target)
    return True


def _pad_dense_input(g: GraphEditor, conv: _QdqConv, multiple: int) -> bool:
    c = conv.in_channels
    target = -(-c // multiple) * multiple
    if target == c or conv.group != 1:
        return False
    dq = g.per_tensor_dq(conv.node.input[0])
    if dq is None:
        return False
    from onnx import helper

    pads = g.add_initializer(np.array([0, 0, 0, 0, 0, target - c, 0, 0], np.int64), "channel_pads")
    padded_q, padded = g.unique(dq.input[0]), g.unique(dq.output[0])
    # pad the quantized tensor with its zero point: the new channels dequantize to exactly 0
    g.insert_before(conv.node, helper.make_node("Pad", [dq.input[0], pads, dq.input[2]], [padded_q],
                                                name=g.unique("pad"), mode="constant"))
    g.insert_before(conv.node, helper.make_node("DequantizeLinear", [padded_q] + list(dq.input[1:3]), [padded],
                                                name=g.unique("input_dq")))
    conv.node.input[0] = padded
    conv.repad_weight(g, 1, target)
    return True


def pad_int8_conv_channels(model, depthwise_multiple: int = DEPTHWISE_MULTIPLE,
                           input_multiple: int = INPUT_CHANNEL_MULTIPLE) -> PaddingReport:
    """Rewrite `model` (onnx ModelProto with QDQ convs) in place; returns what was padded."""
    report = PaddingReport()
    if not nodes_uniquely_named(model.graph):
        logger.warning("int8 channel padding skipped: the graph's nodes are not uniquely named")
        return report
    # one rewrite at a time, each on fresh look-ups (a rewrite changes the tensors its neighbours check)
    for pad, multiple, field in ((_pad_depthwise, depthwise_multiple, "depthwise"),
                                 (_pad_dense_input, input_multiple, "dense_inputs")):
        done = set()
        while True:
            g = GraphEditor(model.graph)
            candidates = [c for c in (_qdq_conv(g, n) for n in g.graph.node)
                          if c is not None and c.node.name not in done]
            for conv in candidates:
                done.add(conv.node.name)
                if pad(g, conv, multiple):
                    setattr(report, field, getattr(report, field) + 1)
                    g.commit()
                    break
            else:
                break
    return report
