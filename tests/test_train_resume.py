"""A training run killed with SIGKILL between checkpoints and restarted with --resume continues from the
last checkpoint: same iteration, LR, weights and optimizer state as written."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _train_helpers import REPO, TINY_CONFIG, subprocess_env, tiny_cfg, tiny_dataset

from densepose_fnl.engine import DefaultTrainer
from densepose_fnl.solver import lr_at

# warm-up over 5 iterations, LR steps at 10 and 16: the resumed LR differs from BASE_LR and warm-up values
OPTS = ["SOLVER.MAX_ITER", "24", "SOLVER.CHECKPOINT_PERIOD", "4", "SOLVER.STEPS", "(10, 16)", "SEED", "3",
        "DATASETS.TEST", "()"]


def _run(out, env, *extra):
    return subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", TINY_CONFIG, "--log-period", "1",
         *extra, "OUTPUT_DIR", str(out), *OPTS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_checkpoint(out):
    try:
        return (out / "last_checkpoint").read_text().strip()
    except OSError:
        return ""


def test_sigkill_then_resume(tmp_path, monkeypatch):
    synth = tiny_dataset(tmp_path / "synthetic")
    env = subprocess_env(synth)
    out = tmp_path / "run"
    proc = _run(out, env)
    # wait for the checkpoint of iteration 11 (the third) or a later one, then kill -9 while it trains on
    deadline = time.time() + 240
    wanted = {"model_0000011.pth", "model_0000015.pth", "model_0000019.pth"}
    while _last_checkpoint(out) not in wanted:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint of iteration 11 in time"
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model_final.pth").exists()

    ckpt_name = _last_checkpoint(out)
    written = torch.load(out / ckpt_name, weights_only=False)
    it = written["iteration"]
    assert it in (11, 15, 19) and written["scheduler"]["last_epoch"] == it + 1
    with open(out / "metrics.json") as f:
        before = [json.loads(line)["iteration"] for line in f]

    # the resumed trainer as built by train_net --resume: same iteration, weights, LR, optimizer state
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", synth)
    cfg = tiny_cfg(out, *OPTS)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == it + 1
    sd = trainer.model.state_dict()
    assert set(sd) == set(written["model"]) and all(torch.equal(sd[k], v) for k, v in written["model"].items())
    expected_lr = lr_at(cfg, it + 1)
    assert expected_lr < 0.01 * 0.5  # after a step (BASE_LR 0.01)
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([expected_lr] * len(groups))
    state = trainer.optimizer.state_dict()["state"]
    assert len(state) == len(written["optimizer"]["state"]) > 0
    for k, s in written["optimizer"]["state"].items():
        assert torch.equal(state[k]["momentum_buffer"], s["momentum_buffer"])
    del trainer

    # train_net --resume continues at iteration 12 and finishes
    proc = _run(out, env, "--resume")
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    assert f"Resuming at iteration {it + 1}" in log
    with open(out / "metrics.json") as f:
        rows = [json.loads(line) for line in f]
    resumed = rows[len(before):]
    assert [r["iteration"] for r in resumed] == list(range(it + 1, 24))
    assert resumed[0]["lr"] == pytest.approx(expected_lr)
    assert resumed[-1]["lr"] == pytest.approx(lr_at(cfg, 23))
    final = torch.load(out / "model_final.pth", weights_only=False)
    assert final["iteration"] == 23 and final["scheduler"]["last_epoch"] == 24
    assert _last_checkpoint(out) == "model_final.pth"
