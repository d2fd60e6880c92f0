"""Two gloo CPU processes (DDP): different data per rank, identical weights after training (and identical
statistics in the BiFPN's BN, synchronised across processes), different from the rank-dependent inits."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from _train_helpers import subprocess_env, tiny_cfg, tiny_dataset

from densepose_fnl.layers.batch_norm import NaiveSyncBatchNorm
from densepose_fnl.engine import DefaultTrainer, comm, default_setup, launch
from densepose_fnl.engine.launch import find_free_port
from densepose_fnl.modeling import build_model

OPTS = ["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.IMS_PER_BATCH", "4",
        "SEED", "11"]


class _RecordingTrainer(DefaultTrainer):
    seen = []

    @classmethod
    def build_train_loader(cls, cfg):
        loader = super().build_train_loader(cfg)

        def gen():
            for batch in loader:
                cls.seen.append([d["image_id"] for d in batch])
                yield batch

        return gen()


def _worker(synth, out):
    os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = synth
    cfg = tiny_cfg(out, *OPTS)
    default_setup(cfg)  # seeds seed + rank: each rank builds a different random init
    rank = comm.get_rank()
    model = build_model(cfg)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _RecordingTrainer(cfg, model=model, log_period=1)
    trainer.resume_or_load(resume=False)
    trainer.train()
    synced = [n for n, m in trainer.model.module.named_modules() if isinstance(m, NaiveSyncBatchNorm)]
    torch.save({"init": init, "final": trainer.model.module.state_dict(), "seen": _RecordingTrainer.seen,
                "world": comm.get_world_size(), "synced_bn": synced,
                "params": [n for n, _ in trainer.model.module.named_parameters()]},
               os.path.join(out, f"rank{rank}.pth"))


def _check_identical_weights(out):
    r0 = torch.load(os.path.join(out, "rank0.pth"), weights_only=False)
    r1 = torch.load(os.path.join(out, "rank1.pth"), weights_only=False)
    assert r0["world"] == r1["world"] == 2
    # 2 images per rank per iteration, not the same images
    assert [len(b) for b in r0["seen"]] == [2, 2, 2] and r0["seen"] != r1["seen"]
    # DDP broadcast rank 0's init: rank 1's own random init differs
    assert any(not torch.equal(r0["init"][k], r1["init"][k]) for k in r0["init"] if r0["init"][k].is_floating_point())
    f0, f1 = r0["final"], r1["final"]
    assert set(f0) == set(f1)
    for k in r0["params"]:
        assert torch.equal(f0[k], f1[k]), k
    assert len(r0["synced_bn"]) > 0  # the BiFPN switches to SyncBN under torch.distributed
    for m in r0["synced_bn"]:
        for b in ("running_mean", "running_var"):
            assert torch.equal(f0[f"{m}.{b}"], f1[f"{m}.{b}"]), m
    assert any(not torch.equal(f0[k], r0["init"][k]) for k in f0 if f0[k].is_floating_point())
    assert os.path.isfile(os.path.join(out, "model_final.pth"))  # written by rank 0 only


def test_two_gloo_processes_hold_identical_weights(tmp_path):
    synth = tiny_dataset(tmp_path / "synthetic")
    out = str(tmp_path / "run")
    os.makedirs(out)
    launch(_worker, 2, dist_url="auto", args=(synth, out), use_cuda=False)
    _check_identical_weights(out)


def test_two_machines_one_process_each_hold_identical_weights(tmp_path):
    """`--num-machines 2 --machine-rank 0|1 --dist-url tcp://127.0.0.1:PORT`: two launcher processes started
    independently (one "machine" each, one process per machine) meet through torch.distributed."""
    synth = tiny_dataset(tmp_path / "synthetic")
    out = str(tmp_path / "run")
    os.makedirs(out)
    url = f"tcp://127.0.0.1:{find_free_port()}"
    env = subprocess_env(synth)
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).parent / "_launch_machine.py"), synth, out,
                               "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank),
                               "--dist-url", url], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in (1, 0)]  # rank 1 first: it waits for machine 0 at the URL
    logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    _check_identical_weights(out)
