"""Channels-last flatten before the box predictor (`export.channels_last_flatten`): on the box head's form
(conv -> ReLU -> Reshape(-1, C*H*W) -> two Gemms), float and int8 QDQ, the rewrite adds the transpose,
permutes the FC weights, keeps ONNX Runtime's outputs identical, and leaves a flatten alone when something
else reads it."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from densepose_fnl.export.channels_last_flatten import flatten_channels_last  # noqa: E402

C, S = 8, 5  # channels, RoI side


def _box_head(int8: bool, extra_reader: bool = False):
    rng = np.random.default_rng(0)
    const = numpy_helper.from_array
    wc = rng.standard_normal((C, 4, 3, 3)).astype(np.float32) * 0.3
    fcs = [rng.standard_normal((o, C * S * S)).astype(np.float32) * 0.1 for o in (2, 4)]
    inits = [const(wc, "wc"), const(np.float32(0.05), "s"), const(np.uint8(0), "z"),
             const(np.array([-1, C * S * S], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    flat_in = "r"
    if int8:
        nodes += [helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="q1"),
                  helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"], name="dq1")]
        flat_in = "rd"
    nodes.append(helper.make_node("Reshape", [flat_in, "shape"], ["flat"], name="flatten"))
    fc_in = "flat"
    if int8:
        nodes += [helper.make_node("QuantizeLinear", ["flat", "s", "z"], ["fq"], name="q2"),
                  helper.make_node("DequantizeLinear", ["fq", "s", "z"], ["fd"], name="dq2")]
        fc_in = "fd"
    outputs = []
    for i, w in enumerate(fcs):
        if int8:
            scale = (np.abs(w).max(1) / 127).astype(np.float32)
            inits += [const(np.round(w / scale[:, None]).astype(np.int8), f"w{i}q"), const(scale, f"w{i}s"),
                      const(np.zeros(len(w), np.int8), f"w{i}z")]
            nodes.append(helper.make_node("DequantizeLinear", [f"w{i}q", f"w{i}s", f"w{i}z"], [f"w{i}"],
                                          name=f"wdq{i}", axis=0))
        else:
            inits.append(const(w, f"w{i}"))
        nodes.append(helper.make_node("Gemm", [fc_in, f"w{i}"], [f"y{i}"], name=f"fc{i}", transB=1))
        outputs.append(f"y{i}")
    if extra_reader:
        nodes.append(helper.make_node("ReduceMax", ["flat"], ["flat_max"], name="other", keepdims=1))
        outputs.append("flat_max")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, S, S])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", "k"]) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("int8", [False, True])
def test_flatten_becomes_channels_last_with_identical_outputs(int8):
    model = _box_head(int8)
    x = np.random.default_rng(1).standard_normal((6, 4, S, S)).astype(np.float32)
    want = _run(model, x)
    assert flatten_channels_last(model) == 1
    onnx.checker.check_model(model)
    transpose = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert len(transpose) == 1 and list(transpose[0].attribute[0].ints) == [0, 2, 3, 1]
    got = _run(model, x)
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.abs(w).max() > 0
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_flatten_read_by_something_else_is_left_alone():
    model = _box_head(False, extra_reader=True)
    before = model.SerializeToString()
    assert flatten_channels_last(model) == 0 and model.SerializeToString() == before
