"""`train_net.py --eval-only MODEL.WEIGHTS ...` (the evaluators' command) with a bad checkpoint ends on one line
naming the file and the reason (exit 2), never a traceback; torn files are called corrupt, and only a valid
pickle that needs code gets the advice about trusting its source."""
import collections
import pickle
import subprocess
import sys

import pytest
import torch

from _train_helpers import REPO, TINY_CONFIG


def _eval_only(weights, out, *flags):
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", TINY_CONFIG, *flags,
                           "--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out)],
                          capture_output=True, text=True, timeout=300)


def _write(kind, path):
    if kind == "missing":
        return
    if kind == "mismatched":  # a valid checkpoint of another model
        torch.save({"model": {"backbone.some.weight": torch.zeros(3)}}, path)
        return
    if kind == "code":
        with open(path, "wb") as f:
            pickle.dump({"model": {}, "config": collections.Counter(a=1)}, f)
        return
    torch.save({"model": {"w": torch.zeros(256, 256)}}, path)
    data = path.read_bytes()
    if kind == "random":
        data = bytes(range(256)) * 20
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("kind, reason", [
    ("missing", "checkpoint not found"),
    ("truncated", "not a valid checkpoint (truncated or corrupt"),
    ("random", "not a valid checkpoint (truncated or corrupt"),
    ("code", "safe unpickling failed: refused global 'collections.Counter'"),
    ("mismatched", ""),
])
def test_bad_checkpoint_is_one_line(tmp_path, kind, reason):
    path = tmp_path / ("model.pkl" if kind == "code" else "model.pth")
    _write(kind, path)
    proc = _eval_only(path, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_net.py: error: {path}: "), last
    assert reason in last
    if kind in ("truncated", "random"):
        assert "trust" not in last
    if kind == "code":
        assert "trust" in last


def test_trust_checkpoint_flag_lets_a_code_carrying_file_load(tmp_path):
    """--trust-checkpoint (a flag, not an environment variable) runs the pickle: the file then loads and is
    rejected only for what it holds (no weights of this model)."""
    path = tmp_path / "model.pkl"
    _write("code", path)
    proc = _eval_only(path, tmp_path / "out", "--trust-checkpoint")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_net.py: error: {path}: ") and "refused global" not in last, last
