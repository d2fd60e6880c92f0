"""Size / compute / CPU latency (and, on a dataset, accuracy) of DensePose models across runtimes (PyTorch
eager, ONNX Runtime fp32, ONNX Runtime int8), measured side by side in one process. `tools/benchmark.py`
is the command line; its docstring describes the protocols.

Two modes share the model preparation (`prepare_config`: build / calibrate / export / cache, one `Entry`
per (config, runtime)) and the timing discipline (warm-up, memory locked, idle gap before each timed run,
jobs interleaved so that slow phases of a shared machine hit every runtime alike):

* `run_fixed_k`: one image, exactly K persons forced into the DensePose head, --rounds interleaved rounds.
  For a CSE config (DensePoseEmbeddingPredictor) the timed scope also holds the pixel -> mesh vertex matching
  of the K persons (`CseResultsConverter` on every box pixel: eager after the model, ORT by
  `OrtPredictor.cse_results`), the post-processing every CSE app runs; the file size is the graph plus its
  `.vertex_embeddings.npz`.
* `run_dataset`: the paper's protocol (Tables 4-6): every image of a dataset through each (config, runtime,
  size) with the model's own detections, latency per image, and box / DensePose AP of the very outputs
  that were timed, scored by the project's evaluator (`evaluation.build.build_evaluator`), optionally on
  the subsets of images with at most N people (`people_subsets`).
"""
import contextlib
import ctypes
import functools
import hashlib
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from typing import Dict, List, Sequence

DEMO_IMAGE = "/work/shared/data/densepose_demo/demo_im.jpg"
MAX_SIZE = 1333  # cap of the longest side at every benchmarked size (detectron2's default MAX_SIZE_TEST)
CALIB_IMAGES = 8  # dataset images (per size) calibrating BN of a random init and the PTQ int8 model

logger = logging.getLogger("densepose_fnl.benchmark")


class BenchmarkError(ValueError):
    """A bad request (unknown dataset, missing config, unavailable provider); the message is one line."""


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


def munlockall() -> None:
    try:
        ctypes.CDLL("libc.so.6").munlockall()
    except OSError:
        pass


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

    from ..data.image_io import read_image

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
    """One (config, runtime): `run(x)` on a (3, H, W) uint8 tensor returns the number of persons (fixed-K
    mode); `infer(x)` returns the Instances in the input's pixels (dataset mode, before detector_postprocess).
    The reference runtime's entry also has `reference` (its ReferenceRuntime worker) and `torch_infer` (our
    PyTorch model's outputs, to compare with)."""

    def __init__(self, config_name, runtime, run, params, size_bytes, infer=None, cfg=None):
        self.config_name, self.runtime, self.run = config_name, runtime, run
        self.params, self.size_bytes = params, size_bytes
        self.infer, self.cfg = infer, cfg
        self.times = {}
        self.gmacs = {}
        self.reference = None  # the reference runtime's worker (ReferenceRuntime); torch_infer: our outputs

    def timed_run(self, x):
        """(persons, ms) of one run; the reference runtime's ms are measured inside its worker process (the
        model's inference alone, not the pipes)."""
        if self.reference is not None:
            ms, out = self.reference.run(x)
            return len(out["scores"]), ms
        t0 = time.perf_counter()
        n = self.run(x)
        return n, (time.perf_counter() - t0) * 1e3


def prepare_config(config_file, args, inputs, log, opts=None, calib_tag="", flops=None):
    """Entries of one config for every runtime of args.runtimes.

    inputs: {size: [(3, H, W) uint8 network inputs]}: the calibration images (BN of a random init, PTQ) at
    every size; the first one of the first size is the export's sample. opts: the config overrides (the
    fixed-K mode's by default); calib_tag names the calibration images in the export cache key; flops:
    count GMACs at every size on the first input (default: not args.no_flops)."""
    import torch

    from ..config import load_config
    from ..export import build_export_model, export_onnx, make_session, open_ort_predictor
    from ..export.vertex_embeddings import vertex_embeddings_path
    from ..postprocess.cse import is_cse_config

    if opts is None:
        opts = fixed_k_opts(args)
    cfg = load_config(config_file, opts)
    name = os.path.splitext(os.path.basename(config_file))[0]
    calib = [[{"image": x}] for s in args.sizes for x in inputs[s]]
    model, _ = build_export_model(cfg, False, calib, log=log)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    entries = {}
    runtimes = args.runtimes.split(",")
    key = hashlib.sha1((os.path.abspath(config_file) + repr(opts) + args.int8_weights + code_version() + calib_tag
                        ).encode()).hexdigest()[:10]
    cache = os.path.join(args.cache_dir, f"{name}_{key}")
    os.makedirs(cache, exist_ok=True)

    def torch_infer(x, model=model):
        with torch.no_grad():
            return model.inference([{"image": x}], do_postprocess=False)[0]["instances"]

    cse = is_cse_config(cfg)
    if cse:  # CSE: the timed scope ends with the vertex maps (the matching every CSE app runs after the model)
        from ..postprocess.cse import CseResultsConverter, predictor_vertex_embeddings

        torch_cse = CseResultsConverter.from_config(cfg, predictor_vertex_embeddings(model), charts="none")

        def torch_run(x):
            inst = torch_infer(x)
            return len(torch_cse(inst.pred_boxes, inst.pred_densepose, inst.pred_classes))
    else:
        def torch_run(x):
            return len(torch_infer(x))

    if "torch" in runtimes:
        entries["torch"] = Entry(name, "torch", torch_run, params, buf.getbuffer().nbytes, torch_infer, cfg)
    sample = inputs[args.sizes[0]][0][None]
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
                    from ..quantization import build_ptq_model

                    qmodel = build_ptq_model(cfg, model, calib)
            export_onnx(qmodel if int8 else model, path, sample_image=sample, ort_rewrites=not plain,
                        class_to_mesh_name=cfg.DATASETS.CLASS_TO_MESH_NAME_MAPPING or None)
            log.info("exported %s %s in %.0f s", name, rt, time.time() - t0)
        size_bytes = os.path.getsize(path)
        if cse:  # the graph, then OrtPredictor's vertex matching (CseResultsConverter, as torch_run)
            ort_pred = open_ort_predictor(path, cfg, args.threads, args.ort_provider)
            size_bytes += os.path.getsize(vertex_embeddings_path(path))

            def ort_run(x, pred=ort_pred):
                return len(pred.cse_results(pred.run_tensor(x)))
        else:
            sess = make_session(path, args.threads, provider=args.ort_provider)
            in_name = sess.get_inputs()[0].name

            def ort_run(x, sess=sess, in_name=in_name):
                return len(sess.run(["scores"], {in_name: x.numpy()[None]})[0])

        ort_infer = None
        if getattr(args, "dataset", None):  # the predictor's own session: whole outputs -> Instances
            ort_infer = (ort_pred if cse else open_ort_predictor(path, cfg, args.threads, args.ort_provider)).run_tensor
        entries[rt] = Entry(name, rt, ort_run, params, size_bytes, ort_infer, cfg)
        entries[rt].onnx_path = path
    if "reference" in runtimes:
        entries["reference"] = reference_entry(config_file, name, cfg, opts, model, args, cache, torch_infer)
    gmacs = {}
    if (not args.no_flops) if flops is None else flops:
        gmacs = count_gmacs(model, {s: xs[0] for s, xs in inputs.items()}, log)
    for e in entries.values():
        e.gmacs = gmacs
    return entries, inputs


def reference_entry(config_file, name, cfg, opts, model, args, cache, torch_infer) -> Entry:
    """The reference runtime of one config: the authors' model (reference_runtime.authors_config) in a worker
    of the reference venv, with the very state dict of our `model` (saved to the cache dir: a random init
    calibrated here, or MODEL.WEIGHTS as loaded)."""
    import torch

    from .reference_runtime import ReferenceRuntime

    weights = os.path.join(cache, "reference_weights.pth")
    torch.save({"model": model.state_dict()}, weights)
    ref = ReferenceRuntime(getattr(args, "reference_python", ""), getattr(args, "reference_peer", ""),
                           threads=args.threads)
    try:
        params = ref.load(config_file, list(opts), weights, args.people)
    except BaseException:
        ref.close()
        raise

    def run(x):
        return len(ref.run(x)[1]["scores"])

    e = Entry(name, "reference", run, params, os.path.getsize(weights), None, cfg)
    e.reference, e.torch_infer = ref, torch_infer
    return e


def check_reference(entries, inputs, log) -> Dict:
    """{(config, size): (problem or None, {output: max |diff|}, worker RSS MB after warm-up)}: each
    reference entry's outputs vs our PyTorch model's on the same input (reference_runtime.compare_outputs);
    a mismatch is logged."""
    from .reference_runtime import compare_outputs

    out = {}
    for e in entries:
        if e.reference is None:
            continue
        for s, x in inputs.items():
            _, theirs = e.reference.run(x)
            problem, diffs = compare_outputs(e.torch_infer(x), theirs)
            out[e.config_name, s] = (problem, diffs, e.reference.rss_mb())  # RSS before mlockall faults all in
            if problem:
                log.warning("%s at %d: the reference outputs differ from ours: %s", e.config_name, s, problem)
    return out


def close_entries(entries) -> None:
    for e in entries:
        if e.reference is not None:
            e.reference.close()


def fixed_k_opts(args) -> List[str]:
    return list(args.opts) + ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                              "TEST.DETECTIONS_PER_IMAGE", str(args.people)]


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
    from ..export import make_session

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


# loggers whose INFO lines would bury the benchmark's own (exporters; checkpoint loads; per-job eval summaries)
QUIET_LOGGERS = ("onnx_ir", "onnxscript", "densepose_fnl.checkpoint", "densepose_fnl.evaluation")


@contextlib.contextmanager
def _quiet_logging():
    """The benchmark's console logging for the duration of a run; the callers' logger levels come back after
    (a run inside another program, or a test, must not silence its loggers for good)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loggers = [logging.getLogger(n) for n in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _scoped_to_the_run(run):
    """Quiet logging during the run; memory unlocked and torch's thread count restored after it, for a process
    that goes on, such as a test session (MCL_FUTURE would lock, and slow down, every later allocation; a changed
    thread count changes the rounding of every later computation)."""
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        import torch

        threads = torch.get_num_threads()
        try:
            with _quiet_logging():
                return run(*args, **kwargs)
        finally:
            munlockall()
            torch.set_num_threads(threads)
    return wrapped


def _setup(args):
    """Heap policy, config files, the reference runtime's setup and the provider check (before minutes of
    exports), threads."""
    keep_heap()
    for c in args.configs:
        if not os.path.isfile(c):
            raise BenchmarkError(f"config not found: {c}")
    if "reference" in args.runtimes.split(","):  # its interpreter, peer and config mappings, before any model
        if getattr(args, "dataset", ""):
            raise BenchmarkError("--runtimes reference: the reference runtime is for the fixed-K mode (no --dataset)")
        from .reference_runtime import check_reference_setup

        check_reference_setup(getattr(args, "reference_python", ""), getattr(args, "reference_peer", ""),
                              args.configs)
    from ..export import OrtProviderError, resolve_provider

    try:
        provider = resolve_provider(args.ort_provider)
    except OrtProviderError as e:
        raise BenchmarkError(f"--ort-provider: {e}") from None
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return provider


@_scoped_to_the_run
def run_fixed_k(args) -> dict:
    """The fixed-K protocol (tools/benchmark.py without --dataset); prints the table, returns the JSON dict."""
    provider = _setup(args)
    from ..data.preprocess import preprocess_bgr_image

    log = logger
    image_bgr = load_image(args.image)
    entries = []
    try:
        for c in args.configs:
            cfg_format = _input_format(c, fixed_k_opts(args))
            inputs = {s: [preprocess_bgr_image(image_bgr, cfg_format, s, MAX_SIZE)["image"]] for s in args.sizes}
            e, _ = prepare_config(c, args, inputs, log)
            entries += list(e.values())
        return _time_fixed_k(args, entries, {s: xs[0] for s, xs in inputs.items()}, provider, log)
    finally:
        close_entries(entries)


def _time_fixed_k(args, entries, inputs, provider, log) -> dict:
    jobs = [(e, s) for s in args.sizes for e in entries]
    n = None
    for e, s in jobs:
        for _ in range(args.warmup):
            n = e.run(inputs[s])
        if n != args.people:
            log.warning("%s/%s at %d: %d persons reached the DensePose head (wanted %d)",
                        e.config_name, e.runtime, s, n, args.people)
        e.times[s] = []
    checks = check_reference(entries, inputs, log)  # the authors' outputs vs ours, same input and weights
    locked = mlockall()  # after warm-up: the runtimes' working memory exists and is locked in place
    for e in entries:
        if e.reference is not None:
            locked = e.reference.lock_memory() and locked  # the reference worker's too
    if not locked:
        log.warning("mlockall failed: latency may show page-out outliers")
    for r in range(args.rounds):
        for e, s in jobs:
            # idle gap: the previous runtime's worker threads (ORT / OpenMP spin-wait after a run) must not
            # compete with the next one's, or whichever runs right after another is slowed
            time.sleep(args.gap_ms / 1e3)
            n, ms = e.timed_run(inputs[s])
            e.times[s].append(ms)
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
            if e.reference is not None:
                problem, diffs, rss = checks[e.config_name, s]
                rows[-1].update(outputs_match=problem is None, outputs_mismatch=problem, outputs_max_diff=diffs,
                                rss_mb=rss, authors_config=e.reference.config,
                                authors_opts=e.reference.opts)
    base = {(r["config"], r["size"]): r["median_ms"] for r in rows if r["runtime"] == "ort"}
    torch_base = {(r["config"], r["size"]): r["median_ms"] for r in rows if r["runtime"] == "torch"}
    ref_base = {(r["config"], r["size"]): r["median_ms"] for r in rows if r["runtime"] == "reference"}
    for r in rows:
        ref = ref_base.get((r["config"], r["size"]))
        r["vs_reference"] = r["median_ms"] / ref if ref else None
    print(f"\nMachine: {machine}; memory locked: {locked}; K = {args.people}; {args.rounds} interleaved rounds\n")
    print("| config | runtime | size (HxW) | params | file MB | GMACs | median ms | p90 ms | vs torch | vs ort | "
          "vs reference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = torch_base.get((r["config"], r["size"]))
        o = base.get((r["config"], r["size"]))
        g = f"{r['gmacs']:.2f}" if r["gmacs"] else "-"
        vs_t = f"{r['median_ms'] / t:.2f}" if t else "-"
        vs_o = f"{r['median_ms'] / o:.2f}" if o else "-"
        vs_r = f"{r['vs_reference']:.2f}" if r["vs_reference"] else "-"
        print(f"| {r['config']} | {r['runtime']} | {r['size']} ({r['input_hw'][0]}x{r['input_hw'][1]}) | "
              f"{r['params'] / 1e6:.2f}M | {r['size_mb']:.2f} | {g} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{vs_t} | {vs_o} | {vs_r} |")
    notes = []
    for r in rows:
        if r["runtime"] != "reference":
            continue
        if r["size"] == args.sizes[0]:
            notes.append(f"{r['config']}/reference = the authors' DensePoseFnL on detectron2 "
                         f"({os.path.basename(r['authors_config'])}"
                         f"{' + ' + ' '.join(r['authors_opts']) if r['authors_opts'] else ''}), same weights, input "
                         "and K, timed in its worker process")
        worst = max(r["outputs_max_diff"].values(), default=float("nan"))
        if r["outputs_match"]:
            notes.append(f"{r['config']} at {r['size']}: the reference outputs equal ours (PyTorch) within 1e-4 "
                         f"(largest |diff| {worst:.1e}); worker RSS after warm-up {r['rss_mb']:.0f} MB")
        else:
            notes.append(f"WARNING {r['config']} at {r['size']}: the reference outputs differ from ours (PyTorch): "
                         f"{r['outputs_mismatch']}")
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    if args.ort_profile:
        for e in entries:
            if hasattr(e, "onnx_path"):
                shares = ort_profile(e.onnx_path, inputs[args.sizes[0]], args.threads, provider=args.ort_provider)
                top = ", ".join(f"{op} {100 * f:.0f}%" for op, f in shares[:8])
                print(f"\nORT profile {e.config_name}/{e.runtime} at {args.sizes[0]}: {top}")
    result = {"machine": machine, "memory_locked": locked, "people": args.people,
              "rounds": args.rounds, "warmup": args.warmup, "rows": rows}
    if args.json:
        _write_json(result, args.json)
    if args.plot:
        plot(rows, args.plot, machine, args.people)
    return result


def _input_format(config_file, opts) -> str:
    from ..config import load_config

    return load_config(config_file, opts).INPUT.FORMAT


def _json_safe(v):
    """NaN (COCO's "no ground truth of that size") -> null, so that the file is standard JSON."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _write_json(result, path) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_json_safe(result), f, indent=1, allow_nan=False)


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


# ---------------------------------------------------------------------------------------------- dataset mode

def num_people(record: Dict) -> int:
    """People of a dataset image: its non-crowd annotations (the paper's Table 5 filter)."""
    return sum(1 for a in record.get("annotations", []) if int(a.get("iscrowd", 0)) == 0)


def people_subsets(dicts: Sequence[Dict], max_people: Sequence[int] = ()) -> Dict[str, List[int]]:
    """{"all": every image id, and per N of max_people "<=N": the ids of the images with at most N people}
    (images without people are in every subset, as in a filtered copy of the annotation file)."""
    out = {"all": [d["image_id"] for d in dicts]}
    for n in max_people or ():
        out[f"<={n}"] = [d["image_id"] for d in dicts if num_people(d) <= n]
    return out


def resolve_dataset(name: str):
    """(name, dataset dicts) of a registered dataset, or of a "NAME=ANN.json:IMAGES/" spec (registered
    here); a BenchmarkError naming it if it is unknown or its files are missing."""
    from ..data import DatasetCatalog, get_detection_dataset_dicts
    from ..data.datasets.register import register_dataset_specs

    if "=" in name:
        try:
            name = register_dataset_specs([name])[0]
        except (ValueError, FileNotFoundError) as e:
            raise BenchmarkError(f"--dataset: {e}") from None
    if name not in DatasetCatalog:
        raise BenchmarkError(f"--dataset: unknown dataset '{name}' (registered: {', '.join(DatasetCatalog.list())}; "
                             "or NAME=ANN.json:IMAGES/)")
    try:
        dicts = get_detection_dataset_dicts(name, filter_empty=False)
    except (FileNotFoundError, ValueError) as e:
        raise BenchmarkError(f"--dataset: {str(e).splitlines()[0]}") from None
    return name, dicts


def dataset_opts(args, size: int) -> List[str]:
    """The config as given (own score threshold and detection cap), images at shortest side `size`."""
    return list(args.opts) + ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", str(size),
                              "INPUT.MAX_SIZE_TEST", str(MAX_SIZE), "OUTPUT_DIR", ""]  # no results files


def _latency(ms: Sequence[float]) -> Dict[str, float]:
    mean = statistics.fmean(ms)
    return {"mean_ms": mean, "median_ms": statistics.median(ms), "p90_ms": percentile(ms, 0.9),
            "fps": 1e3 / mean if mean > 0 else math.inf}


@_scoped_to_the_run
def run_dataset(args) -> dict:
    """The paper's protocol (tools/benchmark.py --dataset NAME); prints Tables 4-6, returns the JSON dict."""
    provider = _setup(args)
    from tqdm import tqdm

    from ..data import DatasetMapper
    from ..evaluation.build import build_evaluator
    from ..postprocess import detector_postprocess

    log = logger
    name, dicts = resolve_dataset(args.dataset)
    if args.max_images:
        dicts = dicts[:args.max_images]
    if not dicts:
        raise BenchmarkError(f"--dataset: dataset '{name}' has no images")
    subsets = people_subsets(dicts, args.max_people)
    from ..config import load_config

    # jobs: (entry, size, mapper); the models are the same at every size (only INPUT.MIN_SIZE_TEST differs),
    # so each (config, runtime) is prepared once, calibrated on the first images at every size
    jobs = []
    for c in args.configs:
        mappers = {s: DatasetMapper(load_config(c, dataset_opts(args, s)), is_train=False) for s in args.sizes}
        calib = {s: [mappers[s](d)["image"] for d in dicts[:CALIB_IMAGES]] for s in args.sizes}
        entries, _ = prepare_config(c, args, calib, log, opts=dataset_opts(args, args.sizes[0]), flops=False,
                                    calib_tag=f"dataset={name}:{[d['image_id'] for d in dicts[:CALIB_IMAGES]]}")
        jobs += [(e, s, mappers[s]) for s in args.sizes for e in entries.values()]
    # the evaluator train_net builds, its ground truth restricted to the images run ("all": every image, or
    # the first --max-images) or to a max-people subset
    evaluators = {(j, sub): build_evaluator(e.cfg, name, image_ids=ids)
                  for j, (e, _, _) in enumerate(jobs) for sub, ids in subsets.items() if ids}
    members = {sub: set(ids) for sub, ids in subsets.items()}
    for e, s, mapper in jobs:
        x = mapper(dicts[0])["image"]
        for _ in range(args.warmup):
            e.infer(x)
    locked = mlockall()  # after warm-up, as in the fixed-K mode
    if not locked:
        log.warning("mlockall failed: latency may show page-out outliers")
    times = [{} for _ in jobs]  # job -> image id -> [ms per pass]
    detections = [{} for _ in jobs]  # job -> image id -> detections
    for p in range(args.passes):
        for d in tqdm(dicts, desc=f"benchmark {name} pass {p + 1}/{args.passes}", dynamic_ncols=True):
            inputs = {}  # one read + resize per (size, INPUT.FORMAT), shared by the runtimes
            for j, (e, s, mapper) in enumerate(jobs):
                key = (s, e.cfg.INPUT.FORMAT)
                if key not in inputs:
                    inputs[key] = mapper(d)
                inp = inputs[key]
                time.sleep(args.gap_ms / 1e3)  # idle gap, as in the fixed-K mode
                t0 = time.perf_counter()
                instances = e.infer(inp["image"])
                times[j].setdefault(d["image_id"], []).append((time.perf_counter() - t0) * 1e3)
                if p:  # outputs are evaluated once; further passes only add timings
                    continue
                detections[j][d["image_id"]] = len(instances)
                out = [{"instances": detector_postprocess(instances, inp["height"], inp["width"])}]
                for sub in subsets:
                    if d["image_id"] in members[sub]:  # each subset is scored against its images only
                        evaluators[j, sub].process([inp], out)
    machine = machine_description(args.threads) + f"; ONNX Runtime provider {provider}"
    rows = []
    for j, (e, s, _) in enumerate(jobs):
        for sub, ids in subsets.items():
            per_image = [statistics.median(times[j][i]) for i in ids]
            results = evaluators[j, sub].evaluate() if ids else {}
            rows.append(dict(config=e.config_name, runtime=e.runtime, size=s, subset=sub, images=len(ids),
                             params=e.params, size_mb=e.size_bytes / 1e6,
                             detections_per_image=sum(detections[j][i] for i in ids) / max(1, len(ids)),
                             **(_latency(per_image) if per_image else {}),
                             results={t: dict(m) for t, m in results.items()}))
    result = {"mode": "dataset", "dataset": name, "images": len(dicts), "machine": machine,
              "memory_locked": locked, "passes": args.passes, "warmup": args.warmup, "sizes": list(args.sizes),
              "max_people": list(args.max_people or []), "rows": rows}
    print(format_dataset_tables(result))
    if args.json:
        _write_json(result, args.json)
    if args.plot:
        plot_frontier(rows, args.plot, f"{name}, {machine}")
    return result


# ------------------------------------------------------------------------------ tables and the frontier plot

def _ap(row, task, metric="AP") -> str:
    v = row.get("results", {}).get(task, {}).get(metric)  # -1 / -100 / NaN: nothing to score
    return "-" if v is None or v < 0 or v != v else f"{v:.1f}"


def _dp(row, metric="AP") -> str:
    return _ap(row, "densepose_gps", metric)


def format_dataset_tables(result) -> str:
    """The paper's Tables 4 (per image size), 5 (per max. number of people; with --max-people) and 6 (per
    runtime: file size, AP, FPS) in Markdown. dp. AP = DensePose GPS AP (GPSm and IOU AP beside it); FPS =
    1000 / mean latency per image; latency = network input -> raw outputs, see tools/benchmark.py."""
    rows = result["rows"]
    full = [r for r in rows if r["subset"] == "all"]
    torch_fps = {(r["config"], r["size"]): r.get("fps") for r in full if r["runtime"] == "torch"}
    lines = [f"\nDataset {result['dataset']}: {result['images']} images; {result['machine']}; memory locked: "
             f"{result['memory_locked']}; {result['passes']} timed pass(es)\n",
             "Table 4 (image size): per (config, runtime), every image at shortest side S\n",
             "| config | runtime | shortest side | box AP | dp. AP (GPS) | GPSm AP | IOU AP | det./image | "
             "mean ms | median ms | p90 ms | CPU FPS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(full, key=lambda r: (r["config"], r["runtime"], r["size"])):
        lines.append(f"| {r['config']} | {r['runtime']} | {r['size']}px | {_ap(r, 'bbox')} | {_dp(r)} | "
                     f"{_ap(r, 'densepose_gpsm')} | {_ap(r, 'densepose_segm')} | {r['detections_per_image']:.1f} | "
                     f"{r['mean_ms']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['fps']:.2f} |")
    subs = [r for r in rows if r["subset"] != "all"]
    if subs:
        lines += ["\nTable 5 (number of people): the images with at most N people (non-crowd annotations)\n",
                  "| config | runtime | size | max # of people | images | box AP | box APs | box APm | box APl | "
                  "dp. AP | dp. APm | dp. APl | CPU FPS |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(subs, key=lambda r: (r["config"], r["runtime"], r["size"], int(r["subset"][2:]))):
            fps = f"{r['fps']:.2f}" if "fps" in r else "-"
            lines.append(f"| {r['config']} | {r['runtime']} | {r['size']}px | {r['subset'][2:]} | {r['images']} | "
                         f"{_ap(r, 'bbox')} | {_ap(r, 'bbox', 'APs')} | {_ap(r, 'bbox', 'APm')} | "
                         f"{_ap(r, 'bbox', 'APl')} | {_dp(r)} | {_dp(r, 'APm')} | {_dp(r, 'APl')} | {fps} |")
    lines += ["\nTable 6 (runtime / weights type): file = fp32 state dict (torch) or ONNX file (ort*)\n",
              "| config | size | runtime | model size MB | box AP | dp. AP (GPS) | GPSm AP | IOU AP | CPU FPS | "
              "speed-up vs torch |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(full, key=lambda r: (r["config"], r["size"], r["runtime"] != "torch", r["runtime"])):
        t = torch_fps.get((r["config"], r["size"]))
        lines.append(f"| {r['config']} | {r['size']}px | {r['runtime']} | {r['size_mb']:.2f} | {_ap(r, 'bbox')} | "
                     f"{_dp(r)} | {_ap(r, 'densepose_gpsm')} | {_ap(r, 'densepose_segm')} | {r['fps']:.2f} | "
                     f"{(r['fps'] / t) if t else float('nan'):.2f} |")
    return "\n".join(lines)


def frontier(points):
    """The accuracy / speed frontier of (fps, ap) points: those no other point beats in both, by FPS."""
    best, out = -math.inf, []
    for fps, ap in sorted(points, key=lambda p: (-p[0], -p[1])):
        if ap > best:
            out.append((fps, ap))
            best = ap
    return sorted(out)


def plot_frontier(rows, path, title) -> None:
    """AP vs FPS of every (config, runtime, size) on the whole dataset: box AP and DensePose GPS AP panels,
    one line per (config, runtime) through its sizes (labelled), the frontier dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = [r for r in rows if r["subset"] == "all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (task, label) in zip(axes, (("densepose_gps", "DensePose GPS AP"), ("bbox", "box AP"))):
        everything = []
        for key in sorted({(r["config"], r["runtime"]) for r in full}):
            pts = sorted(((r["fps"], r["results"].get(task, {}).get("AP", float("nan")), r["size"])
                          for r in full if (r["config"], r["runtime"]) == key), key=lambda p: p[2])  # by size
            pts = [(f, max(a, 0.0), s) for f, a, s in pts if a == a]  # -1 (nothing detected) drawn at 0
            if not pts:
                continue
            xs, ys, sizes = zip(*pts)
            ax.plot(xs, ys, marker="o", label=f"{key[0]} / {key[1]}")
            for x, y, s in pts:
                ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            everything += [(x, y) for x, y, _ in pts]
        if everything:
            fx, fy = zip(*frontier(everything))
            ax.plot(fx, fy, "k--", lw=1, alpha=0.6, label="frontier")
        ax.set_xlabel("CPU FPS (1000 / mean ms per image)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title[:120], fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
