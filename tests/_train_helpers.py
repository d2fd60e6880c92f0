"""Shared by the test_train_* files: a tiny synthetic dataset and the tiny training config."""
import os
from pathlib import Path

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
