"""Early quantization of pooled RoI features (`export.int8_early_quantize`): on the pooler's form (per-level
float RoIAlign outputs -> Concat -> GatherND back to proposal order -> the box head's QuantizeLinear) the Q
moves above the Concat and the GatherND, ONNX Runtime's uint8 tensor is bit-identical, and nothing moves
when another node reads the concatenated float tensor."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from densepose_fnl.export.int8_early_quantize import quantize_before_data_movement  # noqa: E402


def _pooler_tail(extra_reader: bool = False):
    const = numpy_helper.from_array
    inits = [const(np.float32(0.02), "s"), const(np.uint8(3), "z"), const(np.array([[2], [0], [3], [1], [4]]), "idx")]
    nodes = [helper.make_node("Concat", ["level0", "level1"], ["cat"], name="cat", axis=0),
             helper.make_node("GatherND", ["cat", "idx"], ["ordered"], name="gather"),
             helper.make_node("QuantizeLinear", ["ordered", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], name="dq")]
    outputs = ["out"]
    if extra_reader:
        nodes.append(helper.make_node("ReduceMax", ["cat"], ["cat_max"], name="other", keepdims=0))
        outputs.append("cat_max")
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("level0", TensorProto.FLOAT, [2, 4, 3, 3]),
                                           value("level1", TensorProto.FLOAT, [3, 4, 3, 3])],
                              [value(o, TensorProto.FLOAT, [5, 4, 3, 3] if o == "out" else []) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_quantize_moves_above_gather_and_concat_with_identical_outputs():
    rng = np.random.default_rng(0)
    feeds = {"level0": rng.uniform(-1, 4, (2, 4, 3, 3)).astype(np.float32),
             "level1": rng.uniform(-1, 4, (3, 4, 3, 3)).astype(np.float32)}
    model = _pooler_tail()
    want = _run(model, feeds)[0]
    assert quantize_before_data_movement(model) == 2
    onnx.checker.check_model(model)
    by_name = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert all(producer[i].op_type == "QuantizeLinear" for i in by_name["cat"].input)
    assert by_name["gather"].output[0] == "q" and [n.op_type for n in model.graph.node].count("QuantizeLinear") == 2
    got = _run(model, feeds)[0]
    assert got.shape == (5, 4, 3, 3)
    np.testing.assert_array_equal(got, want)


def test_nothing_moves_when_the_float_tensor_has_another_reader():
    model = _pooler_tail(extra_reader=True)
    before = model.SerializeToString()
    # the Q still moves above the GatherND (its only reader), but not above the Concat read by ReduceMax
    assert quantize_before_data_movement(model) == 1
    assert [n.op_type for n in model.graph.node if n.name == "cat"] == ["Concat"]
    assert model.SerializeToString() != before
    producer = {o: n for n in model.graph.node for o in n.output}
    assert all(producer.get(i) is None for i in next(n for n in model.graph.node if n.name == "cat").input)
