"""Shared by the test_train_* files: a tiny synthetic dataset and the tiny training config."""
import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = str(REPO / "configs" / "synthetic" / "mobile_parsing_rcnn_tiny_synthetic.yaml")


def tiny_dataset(root) -> str:
    from densepose_fnl.data import ensure_synthetic_dataset

    return str(ensure_synthetic_dataset(root, num_train=8, num_val=3, seed=3, min_size=64, max_size=80))


def tiny_cfg(output_dir, *opts):
    from densepose_fnl.config import load_config

    return load_config(TINY_CONFIG, ["OUTPUT_DIR", str(output_dir), "DATASETS.TEST", "()", *map(str, opts)])


def subprocess_env(synthetic_root) -> dict:
    env = dict(os.environ)
    env["DENSEPOSE_SYNTHETIC_ROOT"] = str(synthetic_root)
    env["OMP_NUM_THREADS"] = "1"  # small model: threads buy little, and spin badly on a busy machine
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and OpenMP / ORT threads spin badly on a busy machine (ORT
    follows torch's count). Autouse in the modules that import it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def drop_log_handlers():
    """train_net's default_setup logs to the current stdout and OUTPUT_DIR/log.txt; detach after each test."""
    yield
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_densepose_fnl", False):
            root.removeHandler(h)
            h.close()
