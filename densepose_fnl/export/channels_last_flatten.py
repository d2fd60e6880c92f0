"""Flatten conv features in channels-last order before a fully-connected layer (box predictor), with the
FC weights' columns permuted to match: same outputs, one layout transpose fewer in ONNX Runtime.

Why: ONNX Runtime runs int8 convs channels-last (NHWC) and transposes back to NCHW wherever the graph needs
NCHW. Flattening the box head's (R, C, 7, 7) output for the box predictor is such a place: with 1000
proposals that transpose of a (1000, 7, 7, 64) tensor cost ~1.8 ms of the int8 model. Flattening in
(H, W, C) order instead lets ORT's transpose optimizer cancel it against the layout transpose it inserted.

What: Conv -> [Relu / Clip / Q / DQ] -> Reshape(x, [-1, K]) -> [Q -> DQ] -> Gemm(transB=1) readers becomes
the same with Transpose(perm 0, 2, 3, 1) before the Reshape and each Gemm weight W (O, K = C * H * W)
replaced by W.reshape(O, C, HW).transpose(0, 2, 1).reshape(O, K), float or int8 (per-output-row scales
are unchanged). Exact: the same products, summed in the same order per output.
"""
from typing import List, Optional

import numpy as np

from .onnx_graph import GraphEditor, rewrite_each

LAYOUT_FREE = ("Relu", "Clip", "QuantizeLinear", "DequantizeLinear")  # element-wise: no effect on the order


def _conv_channels(g: GraphEditor, tensor: str) -> Optional[int]:
    """Output channels of the Conv producing `tensor` through element-wise ops, if it is one."""
    node = g.producer.get(tensor)
    while node is not None and node.op_type in LAYOUT_FREE:
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Conv" or len(node.input) < 2:
        return None
    w = _weight_array(g, node.input[1])
    return int(w.shape[0]) if w is not None and w.ndim == 4 else None


def _weight_array(g: GraphEditor, tensor: str) -> Optional[np.ndarray]:
    """A weight given as an initializer or as DequantizeLinear of one (its stored array)."""
    if tensor in g.inits:
        return g.array(tensor)
    dq = g.producer.get(tensor)
    if dq is not None and dq.op_type == "DequantizeLinear":
        return g.array(dq.input[0])
    return None


def _gemm_readers(g: GraphEditor, tensor: str) -> Optional[List]:
    """The Gemm nodes reading `tensor` directly or through Q -> DQ, if nothing else reads it."""
    readers = []
    for node in g.only_consumers(tensor):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] == tensor:
            deeper = _gemm_readers(g, node.output[0])
            if deeper is None:
                return None
            readers += deeper
        elif node.op_type == "Gemm" and node.input[0] == tensor:
            readers.append(node)
        else:
            return None
    return readers or None


def _permutable_gemm(g: GraphEditor, gemm, k: int) -> bool:
    if (g.attr(gemm, "transA", 0) != 0 or g.attr(gemm, "transB", 0) != 1 or len(gemm.input) < 2):
        return False
    w = _weight_array(g, gemm.input[1])
    if w is None or w.ndim != 2 or w.shape[1] != k:
        return False
    if gemm.input[1] in g.inits:
        return True
    dq = g.producer[gemm.input[1]]
    scale = g.array(dq.input[1])
    # per-tensor, or per output row (axis 0): both unaffected by permuting the columns
    return scale is not None and (scale.ndim == 0 or g.attr(dq, "axis", 1) == 0)


def _permute_weight(g: GraphEditor, gemm, channels: int) -> None:
    from onnx import helper

    def permute(w: np.ndarray) -> np.ndarray:
        o, k = w.shape
        return np.ascontiguousarray(w.reshape(o, channels, k // channels).transpose(0, 2, 1).reshape(o, k))

    if gemm.input[1] in g.inits:
        gemm.input[1] = g.add_initializer(permute(g.array(gemm.input[1])), "fc_weight_channels_last")
        return
    dq = g.producer[gemm.input[1]]
    weight = g.add_initializer(permute(g.array(dq.input[0])), "fc_weight_channels_last")
    out = g.unique("fc_weight_channels_last_dq")
    g.insert_before(gemm, helper.make_node("DequantizeLinear", [weight] + list(dq.input[1:]), [out],
                                           name=g.unique("wdq"), axis=g.attr(dq, "axis", 1)))
    gemm.input[1] = out


def _rewrite(g: GraphEditor, reshape) -> bool:
    from onnx import helper

    shape = g.array(reshape.input[1]) if len(reshape.input) > 1 else None
    if shape is None or shape.shape != (2,) or int(shape[0]) != -1 or int(shape[1]) <= 0:
        return False
    k = int(shape[1])
    channels = _conv_channels(g, reshape.input[0])
    if channels is None or k % channels or k == channels:
        return False
    gemms = _gemm_readers(g, reshape.output[0])
    if gemms is None or not all(_permutable_gemm(g, gemm, k) for gemm in gemms):
        return False
    nhwc = g.unique(reshape.input[0] + "_nhwc")
    g.insert_before(reshape, helper.make_node("Transpose", [reshape.input[0]], [nhwc], name=g.unique("to_nhwc"),
                                              perm=[0, 2, 3, 1]))
    reshape.input[0] = nhwc
    for gemm in gemms:
        _permute_weight(g, gemm, channels)
    return True


def flatten_channels_last(model) -> int:
    """Rewrite `model` (onnx ModelProto) in place; returns how many flattens became channels-last."""
    return rewrite_each(model, "Reshape", _rewrite, "channels-last flatten")
