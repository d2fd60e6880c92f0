#!/usr/bin/env python3
"""Size / compute / CPU latency of DensePose models across runtimes (PyTorch eager, ONNX Runtime fp32,
ONNX Runtime int8, and the authors' implementation as a reference), measured side by side.

    tools/benchmark.py --configs C1 [C2 ...] [--runtimes torch,ort,ort-int8[,reference]] [--sizes 512 800]
                       [--people K] [--rounds 15] [--warmup 3] [--threads 2] [--gap-ms 100] [--image IMG]
                       [--int8-weights QAT.pth] [--cache-dir DIR] [--ort-profile] [--ort-provider NAME]
                       [--reference-python PY] [--reference-peer DIR] [--json out.json] [--plot out.png]
                       [KEY VALUE ...]
    tools/benchmark.py --dataset NAME --configs C1 [C2 ...] [--sizes 200 400 512 600 800 1000]
                       [--max-people 1 2 3 4 5] [--runtimes torch,ort,ort-int8] [--passes 1] [--max-images N]
                       [same timing / export / output options] [KEY VALUE ...]

The logic is densepose_fnl.analysis.benchmark (run_fixed_k, run_dataset); this file parses arguments.

Protocol: every model gets exactly K persons into its DensePose head (ROI_HEADS.SCORE_THRESH_TEST 0 and
TEST.DETECTIONS_PER_IMAGE K; checked on every run); inputs are the image resized to shortest side S
(MAX_SIZE_TEST 1333); timed scope = network input tensor -> raw outputs (normalisation, padding, whole
model; not the resize nor per-person chart post-processing, identical for all runtimes; a CSE config's scope
also holds the pixel -> mesh vertex matching of the K persons, which every CSE app runs). Torch and ORT
use --threads intra-op threads. After --warmup runs each, --rounds rounds run every (config, runtime,
size) once per round in a fixed interleaved order, each after an idle --gap-ms (so no runtime's
spin-waiting threads compete with the next runtime's), so slow phases of a shared machine hit all of them
alike; median and p90 over rounds. After warm-up the process memory is locked (mlockall; glibc keeps
freed heap for reuse) so that page reclaim cannot page the runtimes out mid-run. Without MODEL.WEIGHTS
models are random-init with BN statistics calibrated on the image (a raw random init yields no
detections); int8 = --int8-weights (a `train_net.py --qat` checkpoint) or else post-training quantization
calibrated on the image.
Columns: params (nn.Parameter count), size (fp32 state dict for torch, ONNX file for ort*), GMACs
(torch FlopCounterMode / 2 = fvcore's convention, multiply-accumulates of the PyTorch model at that size
with K persons; NMS / RoIAlign not counted). Runtimes ort-plain / ort-int8-plain: the same models exported
without the ONNX Runtime graph rewrites (`export_onnx(ort_rewrites=False)`), to measure what they bring.
--ort-provider NAME: the ONNX Runtime execution provider of every ort* runtime (CPU by default; e.g. XNNPACK
where the installed onnxruntime has it; one it lacks is a one-line error listing the available ones).
Runtime reference (fixed-K mode only): the paper authors' DensePoseFnL on detectron2 (the reference peer,
--reference-peer, default ../shared/reference-peer or /work/shared/reference-peer) in a persistent worker
process of the reference venv's python (--reference-python, default .venv-reference/bin/python; built by
scripts/setup_reference.sh), timed in the same rounds on the same input tensor with the same K and the same
weights (our model's state dict, saved to the cache dir, loaded strictly into the authors' model built from
the authors' config of ours: configs/mobile_parsing_rcnn_b*_s3x.yaml -> DensePoseFnL/configs/ of the same name,
a config deriving from one of them -> that file + its own keys); the worker times the model's inference alone.
After warm-up its outputs are compared with our PyTorch model's (boxes / scores / DensePose head outputs within
1e-4): the notes under the table (and the JSON row) say whether they match. Column "vs reference" = median /
the reference's median of the same config and size. A missing interpreter / peer, a config without an
authors' counterpart or a dying worker is a one-line error (exit 2).

--dataset NAME (the paper's protocol, Tables 4-6): every image of the dataset (a registered name, e.g.
densepose_synthetic_val or densepose_coco_2014_minival, or NAME=ANN.json:IMAGES/) through each (config,
runtime, size) with the model's own detections (the config's score threshold and detection cap; no forced
K); the same timed scope, warm-up, memory lock and idle gap as above, the jobs interleaved per image; per
image the median over --passes, then mean / median / p90 over the images, FPS = 1000 / mean. The outputs
that were timed are scored by the project's evaluator (box AP, DensePose GPS / GPSm / IOU AP, as
train_net --eval-only): Table 4 = a row per size, Table 6 = per runtime with the model file size;
--max-people N ... adds Table 5, the evaluation (and latency) on the images with at most N people
(non-crowd annotations; the ground truth restricted to them). --plot draws AP vs FPS across configs,
runtimes and sizes (the accuracy / speed frontier). Without MODEL.WEIGHTS models are random-init with BN
statistics (and PTQ int8 models) calibrated on the first 8 images at every size. An unknown dataset is a
one-line error naming it (exit 2).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True)
    p.add_argument("--runtimes", default="torch,ort,ort-int8",
                   help="torch, ort, ort-int8; ort-plain / ort-int8-plain: exported without the ONNX Runtime "
                        "graph rewrites (export_onnx(ort_rewrites=False)), to measure what they bring; reference: "
                        "the authors' DensePoseFnL on detectron2 (fixed-K mode)")
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 800])
    p.add_argument("--people", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gap-ms", type=float, default=100.0, help="idle time before each timed run (not timed)")
    p.add_argument("--image", default="")
    p.add_argument("--int8-weights", default="", help="QAT checkpoint for ort-int8 (single config)")
    p.add_argument("--cache-dir", default="output/benchmark_cache")
    p.add_argument("--ort-profile", action="store_true", help="print ONNX Runtime op-type time shares")
    p.add_argument("--ort-provider", default=None, metavar="NAME",
                   help="ONNX Runtime execution provider for the ort* runtimes (default CPU)")
    p.add_argument("--reference-python", default="", metavar="PY",
                   help="the reference venv's python for the reference runtime (default .venv-reference/bin/python)")
    p.add_argument("--reference-peer", default="", metavar="DIR",
                   help="the reference peer's sources (detectron2 + DensePoseFnL; default ../shared/reference-peer "
                        "or /work/shared/reference-peer)")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--json", default="")
    p.add_argument("--plot", default="")
    d = p.add_argument_group("dataset mode (the paper's protocol)")
    d.add_argument("--dataset", default="", metavar="NAME",
                   help="benchmark every image of this dataset with the model's own detections, and its AP")
    d.add_argument("--max-people", nargs="+", type=int, default=[], metavar="N",
                   help="also evaluate on the images with at most N people (Table 5)")
    d.add_argument("--passes", type=int, default=1, help="timed passes over the dataset (per-image median)")
    d.add_argument("--max-images", type=int, default=0, help="only the first N images (0 = all)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from densepose_fnl.analysis.benchmark import BenchmarkError, run_dataset, run_fixed_k

    try:
        (run_dataset if args.dataset else run_fixed_k)(args)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
