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
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from densepose_fnl.export.int8_kernels import conv_kernel_ms, conv_model  # noqa: E402

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
