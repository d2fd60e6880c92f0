"""The benchmark's "reference" runtime: the authors' implementation (DensePoseFnL on detectron2, the reference
peer) timed in a persistent subprocess of the reference venv's python (reference_worker.py), with the same
input tensor, K and weights as our runtimes. The project never imports the peer: it runs only in that process.

* `authors_config(config_file)`: (the authors' YAML, opts) of one of our configs, or None if it has no
  counterpart;
* `ReferenceRuntime`: the worker process (load / run / lock / rss / close); its failures are one-line
  `BenchmarkError`s (with the worker's stderr tail when it dies);
* `compare_outputs(ours, theirs)`: (None, max diffs) when our outputs equal the reference's within the
  tolerances, else (a one-line description of the mismatch, max diffs).
"""
import os
import subprocess
import tempfile
from typing import Dict, List, Optional, Tuple

from .benchmark import BenchmarkError
from .reference_worker import read_message, write_message

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_worker.py")
DEFAULT_PYTHON = os.path.join(REPO, ".venv-reference", "bin", "python")
DEFAULT_PEERS = (os.path.join(os.path.dirname(REPO), "shared", "reference-peer"), "/work/shared/reference-peer")
# our model configs whose counterpart is one of the authors' files (DensePoseFnL/configs/); a config of ours
# deriving from one of them (_BASE_) maps to that file plus its own keys as opts (e.g. the test-tuned ones)
AUTHORS_CONFIGS = ("mobile_parsing_rcnn_b_s3x.yaml", "mobile_parsing_rcnn_b_wc2m_s3x.yaml",
                   "mobile_parsing_rcnn_b_cse_s3x.yaml")
# our keys that only choose how our eager inference runs (no model change, no counterpart in the authors'
# code): not given to the reference
EAGER_ONLY_KEYS = ("TEST.CHANNELS_LAST", "TEST.FOLD_BATCH_NORM")
BOX_TOL = 1e-4  # boxes (px) and scores
MAP_TOL = 1e-4  # DensePose head outputs, absolute


def default_peer() -> str:
    for p in DEFAULT_PEERS:
        if os.path.isdir(p):
            return p
    return DEFAULT_PEERS[0]


def _flatten(d: dict, prefix: str = "") -> List[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out += [f"{prefix}{k}", str(list(v) if isinstance(v, tuple) else v)]
    return out


def authors_config(config_file: str, peer: str) -> Optional[Tuple[str, List[str]]]:
    """(authors' YAML, opts) equivalent to our `config_file`: the file itself when it is one of the authors'
    (inside the peer tree), the authors' file of the same name for AUTHORS_CONFIGS, or, for a config deriving
    from one of those, that file plus the derived config's own keys; None when there is none."""
    import yaml

    path = os.path.abspath(config_file)
    authors_dir = os.path.join(os.path.abspath(peer), "DensePoseFnL", "configs")
    if path.startswith(os.path.join(os.path.abspath(peer), "")):
        return path, []
    name = os.path.basename(path)
    if name in AUTHORS_CONFIGS:
        return os.path.join(authors_dir, name), []
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError:
        return None
    base = data.pop("_BASE_", None)
    if not base:
        return None
    parent = authors_config(os.path.join(os.path.dirname(path), base), peer)
    if parent is None:
        return None
    return parent[0], parent[1] + _flatten(data)


def check_reference_setup(python: str, peer: str, configs: List[str]) -> Tuple[str, str]:
    """(python, peer) resolved (defaults for ""), or a BenchmarkError naming what is missing: the interpreter,
    the peer tree, or the authors' config of one of `configs`."""
    python, peer = python or DEFAULT_PYTHON, peer or default_peer()
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise BenchmarkError(f"reference runtime: python not found: {python} (build it with "
                             "scripts/setup_reference.sh, or pass --reference-python)")
    if not os.path.isdir(os.path.join(peer, "DensePoseFnL")):
        raise BenchmarkError(f"reference runtime: no reference peer (DensePoseFnL) at {peer} (pass --reference-peer)")
    for c in configs:
        if authors_config(c, peer) is None:
            raise BenchmarkError(f"reference runtime: no authors' config for {c} (known: "
                                 f"{', '.join(AUTHORS_CONFIGS)} and configs deriving from them)")
    return python, peer


class ReferenceRuntime:
    """The authors' model in a worker process of `python` (the reference venv), peer sources in `peer`."""

    def __init__(self, python: str = "", peer: str = "", threads: int = 1):
        self.python, self.peer = check_reference_setup(python, peer, [])
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(REFERENCE_PEER_SRC=os.path.abspath(self.peer), PYTHONDONTWRITEBYTECODE="1",
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([self.python, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env, cwd=REPO)
        self.threads = threads

    def _stderr_tail(self, n: int = 3) -> str:
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) or "no output"

    def _call(self, header: dict, arrays: Optional[Dict] = None):
        try:
            write_message(self.proc.stdin, header, arrays)
            reply, out = read_message(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError, ValueError):
            code = self.proc.wait(timeout=30)
            raise BenchmarkError(f"reference worker died (exit {code}) during '{header['cmd']}': "
                                 f"{self._stderr_tail()}") from None
        if not reply.get("ok"):
            raise BenchmarkError(f"reference worker, '{header['cmd']}': {reply.get('error')}")
        return reply, out

    def load(self, config_file: str, opts: List[str], weights: str, people: int) -> int:
        """Build the authors' model of our `config_file` (+ our opts) with `weights`; returns its parameter count."""
        check_reference_setup(self.python, self.peer, [config_file])
        config, extra = authors_config(config_file, self.peer)
        pairs = [(str(k), str(v)) for k, v in zip(*[iter(extra + list(opts))] * 2)]
        opts = [o for k, v in pairs if k not in EAGER_ONLY_KEYS for o in (k, v)]
        reply, _ = self._call({"cmd": "load", "config": config, "opts": opts, "weights": os.path.abspath(weights),
                               "people": people, "threads": self.threads})
        self.config, self.opts = config, opts
        return reply["params"]

    def run(self, image) -> Tuple[float, Dict]:
        """(ms, outputs) of one inference of the (3, H, W) uint8 tensor / array."""
        reply, out = self._call({"cmd": "run"}, {"image": image.numpy() if hasattr(image, "numpy") else image})
        return reply["ms"], out

    def lock_memory(self) -> bool:
        return self._call({"cmd": "lock"})[0]["locked"]

    def rss_mb(self) -> Optional[float]:
        return self._call({"cmd": "rss"})[0]["rss_mb"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call({"cmd": "quit"})
            except BenchmarkError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._stderr.close()


def compare_outputs(ours, theirs: Dict) -> Tuple[Optional[str], Dict[str, float]]:
    """(problem, {output: max |diff|}): problem None if our Instances `ours` (raw outputs, input pixels)
    equal the reference's outputs `theirs`: as many detections, boxes and scores within BOX_TOL, every
    DensePose head output both have within MAP_TOL (abs); else what differs (one line)."""
    import numpy as np

    if len(ours) != len(theirs["scores"]):
        return f"{len(ours)} detections, reference {len(theirs['scores'])}", {}
    boxes = getattr(ours.pred_boxes, "tensor", ours.pred_boxes)  # a tensor here, Boxes in detectron2
    mine = {"boxes": boxes.numpy(), "scores": ours.scores.numpy()}
    dp = ours.get("pred_densepose") if ours.has("pred_densepose") else None
    for k in theirs:
        if k not in mine and dp is not None and hasattr(dp, k):
            mine[k] = getattr(dp, k).numpy()
    bad, diffs = [], {}
    for k, ref in theirs.items():
        if k not in mine:
            continue
        if mine[k].shape != ref.shape:
            bad.append(f"{k} shape {tuple(mine[k].shape)} vs {tuple(ref.shape)}")
            continue
        d = float(np.abs(mine[k].astype(np.float64) - ref).max()) if ref.size else 0.0
        diffs[k] = d
        if not d <= (BOX_TOL if k in ("boxes", "scores") else MAP_TOL):
            bad.append(f"{k} max |diff| {d:.2g}")
    if not any(k not in ("boxes", "scores") for k in diffs) and dp is not None:
        bad.append("no DensePose output in common")
    return ("; ".join(bad) if bad else None), diffs
