#!/usr/bin/env python3
"""ONNX Runtime's int8 vs fp32 convolution kernels on this CPU, one convolution at a time.

    tools/benchmark_int8_kernels.py [--threads 2] [--runs 30] [--json out.json]

Why: the int8 speed-up of a whole model is bounded by its convolutions' speed-ups. Each row is one conv
(+ ReLU) with the shape it has in Mobile Parsing R-CNN B at shortest side 512 (SPNASNet-100 stages and the
BiFPN / RPN convs), built twice as a one-node ONNX graph: float32 `Conv`, and the QDQ form our int8
export has (uint8 activations, symmetric per-channel int8 weights, int32 bias) that ONNX Runtime fuses
into `QLinearConv`. Reported: the median kernel time of the conv node alone from ORT's profiler
(layout reorders / quantize / dequantize at the one-node graph's edges excluded: in the real graph they
are amortised), and int8 / fp32. The input has a known rank, as in the exported model: only then does ORT
run QLinearConv channels-last (otherwise the kernel transposes NCHW <-> NHWC inside, 2-4x slower).
The "padded" rows are the shapes the export's `int8_channel_padding` gives those convs (ORT's fast int8
kernels need depthwise channels % 16 == 0 and dense input channels % 4 == 0).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np

# (name, channels in, channels out, kernel, stride, H, W, groups): shapes of B at 512 x 704 (padded input)
SHAPES = [
    ("stem 3x3 s2", 3, 32, 3, 2, 512, 704, 1),
    ("stem 3x3 s2, input padded to 4 ch", 4, 32, 3, 2, 512, 704, 1),
    ("dw 3x3 32ch @256x352", 32, 32, 3, 1, 256, 352, 32),
    ("pw 16->48 @256x352", 16, 48, 1, 1, 256, 352, 1),
    ("dw 3x3 72ch @128x176", 72, 72, 3, 1, 128, 176, 72),
    ("dw 3x3 72ch padded to 80", 80, 80, 3, 1, 128, 176, 80),
    ("pw 24->72 @128x176", 24, 72, 1, 1, 128, 176, 1),
    ("pw 24->144 @128x176", 24, 144, 1, 1, 128, 176, 1),
    ("dw 5x5 s2 144ch @128x176", 144, 144, 5, 2, 128, 176, 144),
    ("dw 3x3 120ch @64x88", 120, 120, 3, 1, 64, 88, 120),
    ("dw 3x3 120ch padded to 128", 128, 128, 3, 1, 64, 88, 128),
    ("pw 40->240 @64x88", 40, 240, 1, 1, 64, 88, 1),
    ("dw 3x3 240ch @32x44", 240, 240, 3, 1, 32, 44, 240),
    ("pw 192->1152 @16x22", 192, 1152, 1, 1, 16, 22, 1),
    ("dw 5x5 1152ch @16x22", 1152, 1152, 5, 1, 16, 22, 1152),
    ("BiFPN dw 3x3 64ch @128x176", 64, 64, 3, 1, 128, 176, 64),
    ("BiFPN pw 64->64 @128x176", 64, 64, 1, 1, 128, 176, 1),
    ("RPN conv 3x3 64->64 @128x176", 64, 64, 3, 1, 128, 176, 1),
    ("box head 3x3 64->64, 100 RoIs", 64, 64, 3, 1, 7, 7, 1),  # batch 100, see BATCH
    ("chart deconv 4x4 s2 64->25 @32x32 as conv 3x3 64->100", 64, 100, 3, 1, 32, 32, 1),
]
BATCH = {"box head 3x3 64->64, 100 RoIs": 100}


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
        w_scale = (np.abs(w).reshape(cout, -1).max(axis=1) / 127.0).astype(np.float32)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    import onnxruntime as ort

    rows = []
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median conv-node kernel time\n")
    print("| conv | fp32 ms | int8 ms | int8 / fp32 |")
    print("|---|---|---|---|")
    for name, cin, cout, k, stride, h, w, groups in SHAPES:
        x = np.random.default_rng(1).uniform(-1, 1, (BATCH.get(name, 1), cin, h, w)).astype(np.float32)
        t32 = conv_kernel_ms(conv_model(cin, cout, k, stride, groups, False), x, args.threads, args.runs)
        t8 = conv_kernel_ms(conv_model(cin, cout, k, stride, groups, True), x, args.threads, args.runs)
        rows.append(dict(conv=name, fp32_ms=t32, int8_ms=t8, ratio=t8 / t32))
        print(f"| {name} | {t32:.3f} | {t8:.3f} | {t8 / t32:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
