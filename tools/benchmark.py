#!/usr/bin/env python3
"""Size / compute / CPU latency of DensePose models across runtimes (PyTorch eager, ONNX Runtime fp32,
ONNX Runtime int8), measured side by side in one process.

    tools/benchmark.py --configs C1 [C2 ...] [--runtimes torch,ort,ort-int8] [--sizes 512 800] [--people K]
                       [--rounds 15] [--warmup 3] [--threads 2] [--gap-ms 100] [--image IMG] [--int8-weights QAT.pth]
                       [--cache-dir DIR] [--ort-profile] [--ort-provider NAME] [--json out.json] [--plot out.png]
                       [KEY VALUE ...]

Protocol: every model gets exactly K persons into its DensePose head (ROI_HEADS.SCORE_THRESH_TEST 0 and
TEST.DETECTIONS_PER_IMAGE K; checked on every run); inputs are the image resized to shortest side S
(MAX_SIZE_TEST 1333); timed scope = network input tensor -> raw outputs (normalisation, padding, whole
model; not the resize nor per-person chart post-processing, identical for all runtimes). Torch and ORT
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
"""
import argparse
import ctypes
import hashlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEMO_IMAGE = "/work/shared/data/densepose_demo/demo_im.jpg"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", required=True)
    p.add_argument("--runtimes", default="torch,ort,ort-int8",
                   help="torch, ort, ort-int8; ort-plain / ort-int8-plain: exported without the ONNX Runtime "
                        "graph rewrites (export_onnx(ort_rewrites=False)), to measure what they bring")
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
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--json", default="")
    p.add_argument("--plot", default="")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    return p.parse_args(argv)


def keep_heap() -> None:
    """glibc: serve big tensors from the heap and never give it back, so the memory locked after warm-up
    is reused (with per-op mmap/munmap, MCL_FUTURE would fault in and lock every new PyTorch tensor:
    5-10x slower eager runs, while ONNX Runtime's arena is unaffected)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def mlockall() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.mlockall(1 | 2) == 0  # MCL_CURRENT | MCL_FUTURE
    except OSError:
        return False


def machine_description(threads: int) -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime
    import torch

    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} threads; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def load_image(path, rng_seed=0):
    import numpy as np

    from densepose_fnl.data.image_io import read_image

    if path:
        return read_image(path, "BGR")
    if os.path.isfile(DEMO_IMAGE):  # centre 4:3 crop (512 -> 512x683, the authors' measurement size)
        im = read_image(DEMO_IMAGE, "BGR")
        h, w = im.shape[:2]
        cw = min(w, int(round(h * 4 / 3)))
        return im[:, (w - cw) // 2:(w - cw) // 2 + cw].copy()
    return np.random.default_rng(rng_seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def code_version() -> str:
    """Hash of the package sources, so cached exports are redone whenever the model / export code changes."""
    import densepose_fnl

    h = hashlib.sha1()
    root = os.path.dirname(densepose_fnl.__file__)
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(d, f), "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


class Entry:
    """One (config, runtime): a callable on a (3, H, W) uint8 tensor returning the number of persons."""

    def __init__(self, config_name, runtime, run, params, size_bytes):
        self.config_name, self.runtime, self.run = config_name, runtime, run
        self.params, self.size_bytes = params, size_bytes
        self.times = {}
        self.gmacs = {}


def prepare_config(config_file, args, image_bgr, log):
    import torch

    from densepose_fnl.config import load_config
    from densepose_fnl.data.preprocess import preprocess_bgr_image
    from densepose_fnl.export import build_export_model, export_onnx, make_session

    opts = list(args.opts) + ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                              "TEST.DETECTIONS_PER_IMAGE", str(args.people)]
    cfg = load_config(config_file, opts)
    name = os.path.splitext(os.path.basename(config_file))[0]
    inputs = {s: preprocess_bgr_image(image_bgr, cfg.INPUT.FORMAT, s, 1333)["image"] for s in args.sizes}
    calib = [[{"image": inputs[s]}] for s in args.sizes]
    model, _ = build_export_model(cfg, False, calib, log=log)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    entries = {}
    runtimes = args.runtimes.split(",")
    key = hashlib.sha1((os.path.abspath(config_file) + repr(opts) + args.int8_weights + code_version()).encode()
                       ).hexdigest()[:10]
    cache = os.path.join(args.cache_dir, f"{name}_{key}")
    os.makedirs(cache, exist_ok=True)

    def torch_run(x, model=model):
        with torch.no_grad():
            return len(model.inference([{"image": x}], do_postprocess=False)[0]["instances"])

    if "torch" in runtimes:
        entries["torch"] = Entry(name, "torch", torch_run, params, buf.getbuffer().nbytes)
    sample = inputs[args.sizes[0]][None]
    qmodel = None
    for rt in ("ort", "ort-int8", "ort-plain", "ort-int8-plain"):
        if rt not in runtimes:
            continue
        int8, plain = "int8" in rt, rt.endswith("-plain")
        path = os.path.join(cache, ("model_int8" if int8 else "model") + ("_plain" if plain else "") + ".onnx")
        if not os.path.isfile(path):
            t0 = time.time()
            if int8 and qmodel is None:
                qcfg = cfg.clone()
                if args.int8_weights:
                    qcfg.MODEL.WEIGHTS = args.int8_weights
                if args.int8_weights:
                    qmodel, _ = build_export_model(qcfg, True, calib, log=log)
                else:
                    from densepose_fnl.quantization import build_ptq_model

                    qmodel = build_ptq_model(cfg, model, calib)
            export_onnx(qmodel if int8 else model, path, sample_image=sample, ort_rewrites=not plain)
            log.info("exported %s %s in %.0f s", name, rt, time.time() - t0)
        sess = make_session(path, args.threads, provider=args.ort_provider)
        in_name = sess.get_inputs()[0].name

        def ort_run(x, sess=sess, in_name=in_name):
            return len(sess.run(["scores"], {in_name: x.numpy()[None]})[0])

        entries[rt] = Entry(name, rt, ort_run, params, os.path.getsize(path))
        entries[rt].onnx_path = path
    flops = {}
    if not args.no_flops:
        flops = count_gmacs(model, inputs, log)
    for e in entries.values():
        e.gmacs = flops
    return entries, inputs


def count_gmacs(model, inputs, log):
    """Multiply-accumulates of the PyTorch model (convs / linears / matmuls; torch's FlopCounterMode,
    FLOPs / 2, the quantity fvcore reports as "flops"; fvcore's jit tracing fails on the export wrapper)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for s, x in inputs.items():
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model.inference([{"image": x}], do_postprocess=False)
            out[s] = counter.get_total_flops() / 2 / 1e9
        except Exception as e:  # counting problems must not kill the latency benchmark
            log.warning("MAC counting failed at %d: %s", s, e)
    return out


def ort_profile(path, x, threads, runs=5, provider=None):
    """Share of ONNX Runtime node time per op type (profiling a few runs)."""
    from densepose_fnl.export import make_session

    sess = make_session(path, threads, profile=True, provider=provider)
    name = sess.get_inputs()[0].name
    for _ in range(runs):
        sess.run(None, {name: x.numpy()[None]})
    prof = sess.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    os.remove(prof)
    per_op = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0) + ev.get("dur", 0)
    total = sum(per_op.values()) or 1
    return sorted(((op, t / total) for op, t in per_op.items()), key=lambda kv: -kv[1])


def percentile(values, q):
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "densepose_fnl.checkpoint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("densepose_fnl.benchmark")
    keep_heap()
    from densepose_fnl.export import OrtProviderError, resolve_provider

    try:  # before minutes of exports
        provider = resolve_provider(args.ort_provider)
    except OrtProviderError as e:
        print(f"error: --ort-provider: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image_bgr = load_image(args.image)
    entries, inputs = [], {}
    for c in args.configs:
        if not os.path.isfile(c):
            print(f"error: config not found: {c}", file=sys.stderr)
            return 2
        e, inputs = prepare_config(c, args, image_bgr, log)
        entries += list(e.values())
    jobs = [(e, s) for s in args.sizes for e in entries]
    for e, s in jobs:
        for _ in range(args.warmup):
            n = e.run(inputs[s])
        if n != args.people:
            log.warning("%s/%s at %d: %d persons reached the DensePose head (wanted %d)",
                        e.config_name, e.runtime, s, n, args.people)
        e.times[s] = []
    locked = mlockall()  # after warm-up: the runtimes' working memory exists and is locked in place
    if not locked:
        log.warning("mlockall failed: latency may show page-out outliers")
    for r in range(args.rounds):
        for e, s in jobs:
            # idle gap: the previous runtime's worker threads (ORT / OpenMP spin-wait after a run) must not
            # compete with the next one's, or whichever runs right after another is slowed
            time.sleep(args.gap_ms / 1e3)
            t0 = time.perf_counter()
            n = e.run(inputs[s])
            e.times[s].append((time.perf_counter() - t0) * 1e3)
            if n != args.people:
                raise RuntimeError(f"{e.config_name}/{e.runtime} at {s}: {n} persons, expected {args.people}")

    machine = machine_description(args.threads) + f"; ONNX Runtime provider {provider}"
    rows = []
    for e in entries:
        for s in args.sizes:
            h, w = inputs[s].shape[-2:]
            rows.append(dict(config=e.config_name, runtime=e.runtime, size=s, input_hw=[int(h), int(w)],
                             people=args.people, params=e.params, size_mb=e.size_bytes / 1e6,
                             gmacs=e.gmacs.get(s), median_ms=statistics.median(e.times[s]),
                             p90_ms=percentile(e.times[s], 0.9), runs=len(e.times[s])))
    base = {(r["config"], r["size"]): r["median_ms"] for r in rows if r["runtime"] == "ort"}
    torch_base = {(r["config"], r["size"]): r["median_ms"] for r in rows if r["runtime"] == "torch"}
    print(f"\nMachine: {machine}; memory locked: {locked}; K = {args.people}; {args.rounds} interleaved rounds\n")
    print("| config | runtime | size (HxW) | params | file MB | GMACs | median ms | p90 ms | vs torch | vs ort |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = torch_base.get((r["config"], r["size"]))
        o = base.get((r["config"], r["size"]))
        g = f"{r['gmacs']:.2f}" if r["gmacs"] else "-"
        vs_t = f"{r['median_ms'] / t:.2f}" if t else "-"
        vs_o = f"{r['median_ms'] / o:.2f}" if o else "-"
        print(f"| {r['config']} | {r['runtime']} | {r['size']} ({r['input_hw'][0]}x{r['input_hw'][1]}) | "
              f"{r['params'] / 1e6:.2f}M | {r['size_mb']:.2f} | {g} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{vs_t} | {vs_o} |")
    if args.ort_profile:
        for e in entries:
            if hasattr(e, "onnx_path"):
                shares = ort_profile(e.onnx_path, inputs[args.sizes[0]], args.threads, provider=args.ort_provider)
                top = ", ".join(f"{op} {100 * f:.0f}%" for op, f in shares[:8])
                print(f"\nORT profile {e.config_name}/{e.runtime} at {args.sizes[0]}: {top}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "memory_locked": locked, "people": args.people,
                       "rounds": args.rounds, "warmup": args.warmup, "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot, machine, args.people)
    return 0


def plot(rows, path, machine, people):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(r["config"], r["runtime"]) for r in rows}):
        pts = sorted((r["size"], r["median_ms"], r["p90_ms"]) for r in rows if (r["config"], r["runtime"]) == key)
        xs, med, p90 = zip(*pts)
        line, = ax.plot(xs, med, marker="o", label=f"{key[0]} / {key[1]}")
        ax.fill_between(xs, med, p90, alpha=0.15, color=line.get_color())
    ax.set_xlabel("shortest image side (px)")
    ax.set_ylabel(f"latency, median (band to p90), ms, K={people}")
    ax.set_title(machine[:90], fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
