"""Int8 transposed convs as int8 convs + DepthToSpace (`export.int8_deconv_lowering`): the weight mapping is
the same function as PyTorch's 4x4 / stride-2 / padding-1 ConvTranspose2d, and on a QDQ deconv in our
export's form (uint8 activations, per-output-channel int8 weights on axis 1, float bias, a Q after it) the
rewritten graph runs as QLinearConv in ONNX Runtime and gives the same quantized outputs up to a rare
one-step rounding difference (float deconv sums vs integer conv sums)."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from densepose_fnl.export.int8_deconv_lowering import deconv_as_conv_weight, lower_int8_conv_transpose  # noqa: E402


def test_conv_plus_depth_to_space_equals_the_transposed_conv():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 9, generator=g)
    w = torch.randn(5, 3, 4, 4, generator=g)
    want = F.conv_transpose2d(x, w, stride=2, padding=1)
    conv = F.conv2d(x, torch.from_numpy(deconv_as_conv_weight(w.numpy())), padding=1)
    got = F.pixel_shuffle(conv, 2)  # = ONNX DepthToSpace, mode "CRD"
    assert got.shape == want.shape == (2, 3, 14, 18)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _qdq_deconv_model(cin=16, cout=5, bias=True, kernel=4, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cin, cout, kernel, kernel)).astype(np.float32) * 0.2
    ws = (np.abs(w).transpose(1, 0, 2, 3).reshape(cout, -1).max(1) / 127).astype(np.float32)
    const = numpy_helper.from_array
    inits = [const(np.round(w / ws[None, :, None, None]).astype(np.int8), "wq"), const(ws, "ws"),
             const(np.zeros(cout, np.int8), "wz"), const(np.float32(4 / 255), "xs"), const(np.uint8(128), "xz"),
             const(np.float32(6 / 255), "ys"), const(np.uint8(120), "yz")]
    ins = ["xd", "wd"]
    if bias:
        inits.append(const((rng.standard_normal(cout) * 0.3).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=1),
             helper.make_node("ConvTranspose", ins, ["y"], name="deconv", kernel_shape=[kernel, kernel],
                              strides=[2, 2], pads=[(kernel - 2) // 2] * 4),
             helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"], name="qy"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"], name="dqy")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, "h", "w"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, cout, "H", "W"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _session(model, optimized_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bias", [True, False])
def test_qdq_deconv_becomes_an_int8_conv_with_the_same_outputs(bias, tmp_path):
    model = _qdq_deconv_model(bias=bias)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 16, 12, 10)).astype(np.float32)
    want = _session(model).run(None, {"x": x})[0]
    assert lower_int8_conv_transpose(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 1 and ops.count("Conv") == 1
    opt = str(tmp_path / "opt.onnx")
    got = _session(model, opt).run(None, {"x": x})[0]
    assert got.shape == want.shape == (1, 5, 24, 20)
    step = 6 / 255
    assert np.abs(got - want).max() <= step + 1e-6 and (got != want).mean() < 0.02 and np.abs(want).max() > 10 * step
    fused = [n.op_type for n in onnx.load(opt).graph.node]
    assert "QLinearConv" in fused and "Conv" not in fused and "ConvTranspose" not in fused


def test_other_deconvs_are_left_alone():
    model = _qdq_deconv_model(kernel=2)  # 2x2 / stride 2: not the 4x4 form
    before = model.SerializeToString()
    assert lower_int8_conv_transpose(model) == 0 and model.SerializeToString() == before
