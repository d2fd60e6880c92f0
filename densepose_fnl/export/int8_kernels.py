"""One-convolution ONNX graphs in float32 and in our int8 export's QDQ form (uint8 activations, symmetric
per-channel int8 weights in the export's ranges, int32 bias, which ONNX Runtime fuses into QLinearConv), and the kernel time of
that convolution from ORT's profiler: what `tools/benchmark_int8_kernels.py` tabulates."""
import json
import os
import statistics
import tempfile

import numpy as np

from ..quantization.pt2e import DEPTHWISE_WEIGHT_QMAX, GEMM_WEIGHT_QMAX, is_depthwise_conv_weight


def conv_model(cin, cout, k, stride, groups, int8: bool, seed: int = 0):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32) * 0.1
    b = rng.standard_normal(cout).astype(np.float32) * 0.01
    attrs = dict(group=groups, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    const = numpy_helper.from_array
    if not int8:
        inits = [const(w, "w"), const(b, "b")]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **attrs),
                 helper.make_node("Relu", ["c"], ["y"])]
    else:
        x_scale, y_scale = np.float32(4.0 / 255), np.float32(2.0 / 255)
        qmax = DEPTHWISE_WEIGHT_QMAX if is_depthwise_conv_weight(w.shape, groups) else GEMM_WEIGHT_QMAX
        w_scale = (np.abs(w).reshape(cout, -1).max(axis=1) / qmax).astype(np.float32)
        b_scale = (x_scale * w_scale).astype(np.float32)
        inits = [const(np.round(w / w_scale[:, None, None, None]).astype(np.int8), "wq"), const(w_scale, "ws"),
                 const(np.zeros(cout, np.int8), "wz"), const(np.round(b / b_scale).astype(np.int32), "bq"),
                 const(b_scale, "bs"), const(np.zeros(cout, np.int32), "bz"), const(np.array(x_scale), "xs"),
                 const(np.array(128, np.uint8), "xz"), const(np.array(y_scale), "ys"), const(np.array(0, np.uint8), "yz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
                 helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0),
                 helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="conv", **attrs),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def conv_kernel_ms(model_bytes, x, threads: int, runs: int) -> float:
    """Median kernel time of the (fused) convolution node, from ORT's profiler."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "dp_fnl_kernels")
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, {"x": x})
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    times = [e["dur"] for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
             and e.get("args", {}).get("op_name") in ("Conv", "QLinearConv", "FusedConv")]
    if not times:
        raise RuntimeError("no convolution node in the profile")
    per_run = len(times) // runs
    return statistics.median(times[runs // 3 * per_run:]) / 1e3  # skip the first third (warm-up)
