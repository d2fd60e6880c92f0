"""Int8 transposed convolutions as int8 convolutions + DepthToSpace, so ONNX Runtime runs them in int8.

Why: ONNX Runtime's CPU provider has no integer ConvTranspose kernel, so the QDQ ConvTranspose of an int8
export runs as dequantize -> float ConvTranspose -> quantize: the DensePose chart predictor (four 4x4,
stride-2 deconvolutions up-sampling the head's features 2x) stayed float in the int8 model.

What: a 4x4 / stride 2 / padding 1 transposed conv is exactly a 3x3 / stride 1 / padding 1 conv with
4 x C_out channels (one per output phase (ry, rx) in {0, 1}^2) followed by DepthToSpace(2, "CRD"):
output pixel (2m + ry, 2n + rx) reads inputs m + dy, n + dx with dy, dx in {-1, 0, 1}; deconv tap
t = r + 1 - 2 d (when it lies in 0..3) gives conv tap j = d + 1. The int8 weights are copied, not
re-quantized (each phase's filter reuses the channel's scale), so the conv computes the deconv's sums,
in ORT's integer kernels. The deconv's output quantization (the Q that follows it) is applied before the
re-arrangement too (values are only moved, so the same scale / zero point are exact): DQ -> Conv -> Q
fuses into QLinearConv.

Only the int8 graph is rewritten: in float, the zero taps (4 of 9 useful per phase) would cost 2.25x the
multiply-adds of the deconv. A transposed conv not of that exact form is left alone.
"""
from typing import Optional

import numpy as np

from .onnx_graph import GraphEditor, rewrite_each


def deconv_as_conv_weight(w: np.ndarray) -> np.ndarray:
    """(C_in, C_out, 4, 4) stride-2 / padding-1 transposed-conv weight -> (4 C_out, C_in, 3, 3) conv weight whose
    output channel c * 4 + ry * 2 + rx is output phase (ry, rx) of channel c (DepthToSpace "CRD" order)."""
    cin, cout = w.shape[:2]
    out = np.zeros((cout, 2, 2, cin, 3, 3), dtype=w.dtype)
    for r in (0, 1):
        for j in range(3):
            t = r + 3 - 2 * j  # deconv tap feeding conv tap j of phase r
            if not 0 <= t <= 3:
                continue
            for rx in (0, 1):
                for jx in range(3):
                    tx = rx + 3 - 2 * jx
                    if 0 <= tx <= 3:
                        out[:, r, rx, :, j, jx] = w[:, :, t, tx].T
    return out.reshape(cout * 4, cin, 3, 3)


def _is_stride2_k4_deconv(g: GraphEditor, node) -> bool:
    a = {k: g.attr(node, k) for k in ("kernel_shape", "strides", "pads", "output_padding", "dilations", "group",
                                      "auto_pad", "output_shape")}
    return (list(a["kernel_shape"] or []) == [4, 4] and list(a["strides"] or []) == [2, 2]
            and list(a["pads"] or []) == [1, 1, 1, 1] and list(a["output_padding"] or [0, 0]) == [0, 0]
            and list(a["dilations"] or [1, 1]) == [1, 1] and (a["group"] or 1) == 1
            and a["auto_pad"] in (None, b"NOTSET", "NOTSET") and a["output_shape"] is None)


def _lower(g: GraphEditor, node) -> bool:
    from onnx import helper

    if not _is_stride2_k4_deconv(g, node) or g.per_tensor_dq(node.input[0]) is None:
        return False
    weight = g.int8_weight(node.input[1])
    if weight is None or weight[1].ndim != 4:
        return False
    wdq, w, scale, zp = weight
    cout = w.shape[1]
    if scale.ndim == 1 and (g.attr(wdq, "axis", 1) != 1 or scale.shape[0] != cout):
        return False
    bias: Optional[np.ndarray] = None
    if len(node.input) > 2 and node.input[2]:
        bias = g.array(node.input[2])
        if bias is None or bias.dtype != np.float32:
            return False
    q = g.single_consumer(node.output[0])
    if q is None or q.op_type != "QuantizeLinear" or g.array(q.input[1]) is None or g.array(q.input[1]).ndim != 0:
        return False
    # per output channel c -> its 4 phases c * 4 + r share c's scale, zero point and bias
    conv_w = g.add_initializer(deconv_as_conv_weight(w), "deconv_as_conv_weight")
    conv_scale = g.add_initializer(np.repeat(scale, 4) if scale.ndim else scale, "deconv_as_conv_scale")
    conv_zp = g.add_initializer(np.repeat(zp, 4) if zp.ndim else zp, "deconv_as_conv_zero_point")
    w_deq, y, yq, yd = (g.unique(s) for s in ("deconv_as_conv_w", "deconv_as_conv", "deconv_as_conv_q",
                                               "deconv_as_conv_dq"))
    inputs = [node.input[0], w_deq] + ([g.add_initializer(np.repeat(bias, 4), "deconv_as_conv_bias")]
                                       if bias is not None else [])
    q_params = list(q.input[1:3])
    for new in (helper.make_node("DequantizeLinear", [conv_w, conv_scale, conv_zp], [w_deq], name=g.unique("wdq"),
                                 axis=0),
                helper.make_node("Conv", inputs, [y], name=g.unique(node.name), kernel_shape=[3, 3],
                                 pads=[1, 1, 1, 1], strides=[1, 1]),
                helper.make_node("QuantizeLinear", [y] + q_params, [yq], name=g.unique("q")),
                helper.make_node("DequantizeLinear", [yq] + q_params, [yd], name=g.unique("dq")),
                helper.make_node("DepthToSpace", [yd], [node.output[0]], name=g.unique("depth_to_space"),
                                 blocksize=2, mode="CRD")):
        g.insert_before(node, new)
    g.remove(node)
    return True


def lower_int8_conv_transpose(model) -> int:
    """Rewrite `model` (onnx ModelProto) in place; returns how many transposed convs became convs."""
    return rewrite_each(model, "ConvTranspose", _lower, "int8 deconvolution lowering")
