"""Zero-channel padding of int8 ONNX graphs (`export.int8_channel_padding`): on a QDQ graph in exactly our
export's form (uint8 per-tensor activations, symmetric per-channel int8 weights in its ranges, float bias) with SPNASNet's
awkward shapes — a 3-channel stem and a 72-channel depthwise conv whose output feeds two convs (the block's
projection and, as a hooked BiFPN input, a lateral conv) — the rewrite must pad exactly those convs, keep
ONNX Runtime's outputs bit-identical, and leave chains it cannot prove safe alone."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from densepose_fnl.export.int8_channel_padding import pad_int8_conv_channels  # noqa: E402
from densepose_fnl.quantization.pt2e import (DEPTHWISE_WEIGHT_QMAX, GEMM_WEIGHT_QMAX,  # noqa: E402
                                             is_depthwise_conv_weight)


class _Builder:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, arr, stem):
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def qdq(self, x, scale, zero_point=0):
        s, z = self.const(np.float32(scale), "s"), self.const(np.uint8(zero_point), "z")
        q, dq = self.name("q"), self.name("dq")
        self.nodes += [helper.make_node("QuantizeLinear", [x, s, z], [q], name=self.name("Q")),
                       helper.make_node("DequantizeLinear", [q, s, z], [dq], name=self.name("DQ"))]
        return dq

    def conv(self, x, cin, cout, k, groups=1, relu=True, out_scale=0.05):
        w = self.rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * 0.3
        qmax = DEPTHWISE_WEIGHT_QMAX if is_depthwise_conv_weight(w.shape, groups) else GEMM_WEIGHT_QMAX
        ws = (np.abs(w).reshape(cout, -1).max(1) / qmax).astype(np.float32)
        wq = self.const(np.round(w / ws[:, None, None, None]).astype(np.int8), "w")
        wdq = self.name("wdq")
        self.nodes.append(helper.make_node("DequantizeLinear", [wq, self.const(ws, "ws"),
                                                                self.const(np.zeros(cout, np.int8), "wz")],
                                           [wdq], name=self.name("WDQ"), axis=0))
        bias = self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "b")
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, wdq, bias], [y], name=self.name("Conv"), group=groups,
                                           kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1]))
        if relu:
            r = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r], name=self.name("Relu")))
            y = r
        return self.qdq(y, out_scale, 0 if relu else 128)

    def model(self, inputs, outputs):
        value = helper.make_tensor_value_info
        graph = helper.make_graph(self.nodes, "g", [value(i, TensorProto.FLOAT, [1, c, "h", "w"]) for i, c in inputs],
                                  [value(o, TensorProto.FLOAT, ["n", "c", "h", "w"]) for o in outputs], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def spnasnet_like(extra_dw_reader: bool = False):
    """image (3 ch) -> stem 3x3 -> pw 24->72 -> dw 3x3 72 -> {projection 72->24, lateral 72->16}."""
    b = _Builder()
    x = b.qdq("image", 4 / 255, 128)
    stem = b.conv(x, 3, 24, 3)
    expand = b.conv(stem, 24, 72, 1)
    dw = b.conv(expand, 72, 72, 3, groups=72)
    proj = b.conv(dw, 72, 24, 1, relu=False)
    lateral = b.conv(dw, 72, 16, 1, relu=False)
    outputs = [proj, lateral]
    if extra_dw_reader:  # something other than a conv reads the depthwise output: must not be padded
        b.nodes.append(helper.make_node("ReduceMean", [dw], ["dw_mean"], name="mean", keepdims=1))
        outputs.append("dw_mean")
    return b.model([("image", 3)], outputs)


def _run(model, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})


def _weight_shapes(model):
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return [(dict((a.name, helper.get_attribute_value(a)) for a in n.attribute).get("group", 1),
             inits[producer[n.input[1]].input[0]]) for n in model.graph.node if n.op_type == "Conv"]


def test_padding_targets_the_stem_and_the_depthwise_chain_and_is_exact():
    model = spnasnet_like()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 20, 28)).astype(np.float32)
    want = _run(model, x)
    report = pad_int8_conv_channels(model)
    assert (report.depthwise, report.dense_inputs) == (1, 1)
    onnx.checker.check_model(model, full_check=True)
    assert _weight_shapes(model) == [(1, (24, 4, 3, 3)), (1, (80, 24, 1, 1)), (80, (80, 1, 3, 3)),
                                     (1, (24, 80, 1, 1)), (1, (16, 80, 1, 1))]
    got = _run(model, x)
    for g, w in zip(got, want):
        assert g.shape == w.shape and np.abs(w).max() > 0
        np.testing.assert_array_equal(g, w)  # zero channels add exactly nothing to the integer sums
    # the replaced weight DQ nodes and initializers are gone, nothing dangles
    assert len([n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("w_")]) == 5
    used = {i for n in model.graph.node for i in n.input}
    assert all(t.name in used for t in model.graph.initializer)


def test_padded_convs_run_as_qlinearconv_in_onnx_runtime(tmp_path):
    model = spnasnet_like()
    pad_int8_conv_channels(model)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 5 and "Conv" not in ops


def test_chain_with_a_non_conv_reader_is_left_alone():
    model = spnasnet_like(extra_dw_reader=True)
    before = _weight_shapes(model)
    report = pad_int8_conv_channels(model)
    assert report.depthwise == 0 and report.dense_inputs == 1  # the stem is still padded
    assert _weight_shapes(model)[1:] == before[1:]


def test_float_graph_is_untouched():
    b = _Builder()
    w = b.const(np.ones((8, 1, 3, 3), np.float32), "w")
    b.nodes.append(helper.make_node("Conv", ["image", w], ["y"], name="dw", group=8, kernel_shape=[3, 3], pads=[1] * 4))
    model = b.model([("image", 8)], ["y"])
    before = model.SerializeToString()
    report = pad_int8_conv_channels(model)
    assert (report.depthwise, report.dense_inputs) == (0, 0) and model.SerializeToString() == before
