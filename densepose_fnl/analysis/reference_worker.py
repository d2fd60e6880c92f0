"""The reference runtime's worker: the authors' DensePoseFnL (on detectron2) timed in a persistent process.

Run by the reference venv's python (detectron2 + DensePose + DensePoseFnL, scripts/setup_reference.sh), never
imported there as part of densepose_fnl: this file is self-contained (standard library, numpy, torch, and the
peer's detectron2 / DensePose / DensePoseFnL, found through $REFERENCE_PEER_SRC, the peer source tree). Our side
(reference_runtime.py) imports only its framing functions.

    python reference_worker.py        (commands on stdin, replies on stdout; diagnostics on stderr)

Protocol: each message = an 8-byte little-endian length + a JSON header, then, for each name of the header's
"arrays" list, an 8-byte length + the array as .npy bytes. Commands (header "cmd") and replies:

* load {config, opts, weights, people, threads} -> {ok: true, params} | {ok: false, error}: the authors' config
  file + opts (MODEL.DEVICE cpu, no pretrained download, no MODEL.WEIGHTS), build_model, then the state dict of
  `weights` ({"model": state dict}, detectron2's layout) loaded strictly; torch uses `threads` threads;
* run [image: (3, H, W) uint8] -> {ok, ms, n} + arrays boxes, scores and the DensePose head outputs (coarse_segm,
  fine_segm, u, v, or embedding...): ms = the model's inference (input tensor -> raw outputs, detectron2's
  GeneralizedRCNN.inference(do_postprocess=False)), timed here, outside the pipes;
* lock -> {ok, locked}: mlockall (after warm-up, as the benchmark's own process);
* rss -> {ok, rss_mb}: the worker's resident memory;
* quit -> {ok} and exit.
"""
import ctypes
import io
import json
import os
import struct
import sys
import time

import numpy as np

_LEN = struct.Struct("<Q")


def write_message(stream, header, arrays=None):
    """One message: header (a JSON-able dict) and named numpy arrays."""
    arrays = arrays or {}
    header = dict(header, arrays=list(arrays))
    raw = json.dumps(header).encode()
    parts = [_LEN.pack(len(raw)), raw]
    for name in arrays:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
        data = buf.getvalue()
        parts += [_LEN.pack(len(data)), data]
    stream.write(b"".join(parts))
    stream.flush()


def _read_exact(stream, n):
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError(f"stream closed ({n - left} of {n} bytes read)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream):
    """(header, {name: array}) of the next message; EOFError if the stream ends."""
    header = json.loads(_read_exact(stream, _LEN.unpack(_read_exact(stream, _LEN.size))[0]))
    arrays = {}
    for name in header.pop("arrays", []):
        n = _LEN.unpack(_read_exact(stream, _LEN.size))[0]
        arrays[name] = np.load(io.BytesIO(_read_exact(stream, n)), allow_pickle=False)
    return header, arrays


class Worker:
    def __init__(self):
        self.model = None

    def load(self, config, opts, weights, people, threads):
        import torch

        torch.set_num_threads(int(threads))
        src = os.environ.get("REFERENCE_PEER_SRC", "")
        fnl = os.path.join(src, "DensePoseFnL")
        if not os.path.isdir(fnl):
            raise FileNotFoundError(f"no DensePoseFnL in the reference peer tree (REFERENCE_PEER_SRC={src!r})")
        sys.path.insert(0, fnl)
        from densepose import add_densepose_config
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        import backbone  # noqa: F401  (the authors' timm / BiFPN backbone registrations)
        import roi_heads  # noqa: F401  (their RoI heads)
        from config import add_timmnets_config

        cfg = get_cfg()
        add_densepose_config(cfg)
        add_timmnets_config(cfg)
        cfg.merge_from_file(config)
        cfg.merge_from_list(list(opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                                          "MODEL.TIMMNETS.PRETRAINED", "False"])
        cfg.freeze()
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        state = torch.load(weights, map_location="cpu")
        state = state.get("model", state)
        state = {k: torch.as_tensor(v) for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"the weights do not fit the authors' model: {len(missing)} missing "
                           f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        self.model, self.people = model, int(people)
        return {"params": sum(p.numel() for p in model.parameters())}

    def run(self, image):
        import torch

        if self.model is None:
            raise RuntimeError("run before load")
        x = torch.from_numpy(image)
        with torch.no_grad():
            t0 = time.perf_counter()
            inst = self.model.inference([{"image": x}], do_postprocess=False)[0]
            ms = (time.perf_counter() - t0) * 1e3
        out = {"boxes": inst.pred_boxes.tensor.numpy(), "scores": inst.scores.numpy()}
        dp = inst.get("pred_densepose") if inst.has("pred_densepose") else None
        if dp is not None:
            for k, v in vars(dp).items():
                if isinstance(v, torch.Tensor):
                    out[k] = v.numpy()
        return {"ms": ms, "n": len(inst)}, out


def _mlockall():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).mlockall(1 | 2) == 0  # MCL_CURRENT | MCL_FUTURE
    except OSError:
        return False


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    try:  # the benchmark's heap policy (densepose_fnl.analysis.benchmark.keep_heap), for the same reasons
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)
        libc.mallopt(-1, 1 << 30)
    except (OSError, AttributeError):
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints of imported code must not corrupt the protocol
    worker = Worker()
    while True:
        try:
            header, arrays = read_message(stdin)
        except EOFError:
            return 0
        cmd = header.get("cmd")
        try:
            if cmd == "quit":
                write_message(stdout, {"ok": True})
                return 0
            if cmd == "load":
                reply, out = worker.load(header["config"], header["opts"], header["weights"], header["people"],
                                         header["threads"]), {}
            elif cmd == "run":
                reply, out = worker.run(arrays["image"])
            elif cmd == "lock":
                reply, out = {"locked": _mlockall()}, {}
            elif cmd == "rss":
                reply, out = {"rss_mb": _rss_mb()}, {}
            else:
                raise ValueError(f"unknown command {cmd!r}")
            write_message(stdout, dict(reply, ok=True), out)
        except Exception as e:  # a failed command is a reply, the worker goes on
            msg = " ".join(f"{type(e).__name__}: {e}".split())
            write_message(stdout, {"ok": False, "error": msg})


if __name__ == "__main__":
    sys.exit(main())
