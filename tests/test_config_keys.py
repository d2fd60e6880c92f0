"""Config keys do what they say: every default key is read by the code that builds, trains, evaluates and
runs the models, or is a documented unsupported key whose non-default value is an error naming it
(`config.unsupported`); detectron2's and the authors' YAML files that merely carry defaults still load."""
import glob
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from _train_helpers import TINY_CONFIG, tiny_dataset

from densepose_fnl.config import ConfigError, get_cfg, load_config
from densepose_fnl.config.config import CfgNode, check_supported
from densepose_fnl.config.unsupported import UNSUPPORTED, unsupported_reason

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
D2_CONFIGS = SHARED / "reference-peer" / "detectron2" / "projects" / "DensePose" / "configs"

# keys read only when their feature is on; turning the feature on is read (and errors while unsupported)
GATED = {"MODEL.ROI_DENSEPOSE_HEAD.CSE.": "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME"}
AUTHORS_CONFIGS = SHARED / "reference" / "authors_configs"


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


class _Recording(CfgNode):
    """A config that records every key read as an attribute (the way the code reads its config)."""

    read = set()
    paths = {}  # id(node) -> (dotted path, node): holding the node keeps its id from being reused

    def __getattr__(self, name):
        value = super().__getattr__(name)
        path = _Recording.paths.get(id(self), ("", None))[0]
        full = f"{path}.{name}" if path else name
        if isinstance(value, CfgNode):
            _Recording.paths[id(value)] = (full, value)
        else:
            _Recording.read.add(full)
        return value


@pytest.fixture(scope="module")
def keys_read(tmp_path_factory):
    import torch

    from densepose_fnl.engine import DefaultPredictor, DefaultTrainer, default_setup
    from densepose_fnl.evaluation.testing import verify_results
    from densepose_fnl.modeling import build_model
    from densepose_fnl.solver import build_lr_scheduler, build_optimizer

    tmp = tmp_path_factory.mktemp("keys")
    old_root = os.environ.get("DENSEPOSE_SYNTHETIC_ROOT")
    os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = tiny_dataset(tmp / "synthetic")
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _Recording.read.clear()
    try:
        def rec(path, *opts):
            return _Recording(load_config(str(path), ["MODEL.TIMMNETS.PRETRAINED", "False", *opts]))

        # train 2 iterations with periodic evaluation, then predict: the whole user path on the tiny model
        cfg = rec(TINY_CONFIG, "OUTPUT_DIR", str(tmp / "out"), "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "2")
        default_setup(cfg)
        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
        check_supported(cfg)  # what load_config runs on every config
        verify_results(cfg, results)  # what train_net --eval-only runs
        DefaultPredictor(rec(TINY_CONFIG))(np.zeros((64, 80, 3), np.uint8))
        # the other model families: ResNet + FPN, the Parsing R-CNN head, the DeepLab decoder, model A, and
        # chart confidences (the authors' B-WC2M: UV indep_aniso + segm; detectron2's WC1: UV iid_iso)
        for path in (REPO / "configs/densepose_rcnn_R_50_FPN.yaml", REPO / "configs/parsing_rcnn_R_50_FPN.yaml",
                     REPO / "configs/mobile_parsing_rcnn_a.yaml", REPO / "configs/mobile_parsing_rcnn_b.yaml",
                     D2_CONFIGS / "densepose_rcnn_R_50_FPN_DL_s1x.yaml",
                     AUTHORS_CONFIGS / "mobile_parsing_rcnn_b_wc2m_s3x.yaml",
                     D2_CONFIGS / "densepose_rcnn_R_50_FPN_WC1_s1x.yaml"):
            c = rec(path)
            build_lr_scheduler(c, build_optimizer(c, build_model(c)))
    finally:
        torch.set_num_threads(n_threads)
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_densepose_fnl", False):
                logging.getLogger().removeHandler(h)
                h.close()
        if old_root is None:
            os.environ.pop("DENSEPOSE_SYNTHETIC_ROOT", None)
        else:
            os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = old_root
    return set(_Recording.read)


def test_every_default_key_is_read_or_documented_unsupported(keys_read):
    unaccounted = []
    for key, _ in _leaves(get_cfg()):
        if key in keys_read or unsupported_reason(key):
            continue
        gate = next((g for prefix, g in GATED.items() if key.startswith(prefix)), None)
        if gate is not None and gate in keys_read:
            continue
        unaccounted.append(key)
    assert unaccounted == [], f"accepted but never read (implement, or list in config/unsupported.py): {unaccounted}"
    # the list holds no key the code reads after all
    assert [k for k in keys_read if unsupported_reason(k)] == []


def _non_default(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [1]) if len(value) else type(value)([1])
    raise TypeError(value)


def test_each_unsupported_key_with_a_non_default_value_is_an_error_naming_it():
    unsupported = [(k, v) for k, v in _leaves(get_cfg()) if unsupported_reason(k)]
    assert len(unsupported) >= len(UNSUPPORTED)
    for key, value in unsupported:
        cfg = get_cfg()
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = _non_default(value)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_supported(cfg)


def test_unsupported_override_from_the_command_line_and_version():
    with pytest.raises(ConfigError, match=r"TEST\.AUG\.ENABLED = True: test-time augmentation is not supported"):
        load_config(TINY_CONFIG, ["TEST.AUG.ENABLED", "True"])
    with pytest.raises(ConfigError, match="only VERSION 2"):
        load_config(TINY_CONFIG, ["VERSION", "1"])


def test_zoo_and_authors_configs_still_load(shared_dir):
    chart = sorted(glob.glob(str(D2_CONFIGS / "densepose_rcnn_*.yaml")))
    authors = sorted(glob.glob(str(shared_dir / "reference" / "authors_configs" / "*.yaml")))
    cse = sorted(glob.glob(str(D2_CONFIGS / "cse" / "densepose_rcnn_R_*_s1x.yaml")))
    assert len(chart) == 22 and len(authors) == 5 and len(cse) == 8
    for path in chart + authors + cse:
        load_config(path)


def test_auto_scale_workers_rescales_the_schedule():
    from densepose_fnl.engine import DefaultTrainer

    cfg = load_config(TINY_CONFIG, ["SOLVER.REFERENCE_WORLD_SIZE", "2", "SOLVER.IMS_PER_BATCH", "4",
                                    "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(60, 80)",
                                    "SOLVER.WARMUP_ITERS", "10", "SOLVER.CHECKPOINT_PERIOD", "20"])
    out = DefaultTrainer.auto_scale_workers(cfg, 4)
    s = out.SOLVER
    assert (s.IMS_PER_BATCH, s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS, s.CHECKPOINT_PERIOD) == (8, 50, (30, 40), 5, 10)
    assert s.BASE_LR == pytest.approx(0.02) and s.REFERENCE_WORLD_SIZE == 4
    assert cfg.SOLVER.IMS_PER_BATCH == 4  # the input is not modified
    assert DefaultTrainer.auto_scale_workers(cfg, 2).SOLVER.MAX_ITER == 100


def test_expected_results_are_verified(caplog):
    from densepose_fnl.evaluation.testing import verify_results

    cfg = get_cfg()
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 50.0, 0.5], ["densepose_gps", "AP", 30.0, 1.0]]
    results = {"ds": {"bbox": {"AP": 50.2}, "densepose_gps": {"AP": 31.0}}}
    assert verify_results(cfg, results)
    results["ds"]["densepose_gps"]["AP"] = 28.5
    with caplog.at_level(logging.ERROR):
        assert not verify_results(cfg, results)
    assert "densepose_gps/AP = 28.5000, expected 30.0000" in caplog.text
