"""Inference, evaluation and export from a complete checkpoint never look for ImageNet backbone weights
(MODEL.TIMMNETS.PRETRAINED True is the configs' default, and there is no network here): MODEL.WEIGHTS
overwrites them anyway. Without MODEL.WEIGHTS (training from scratch) they are still asked for."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch

from densepose_fnl.config import load_config
from densepose_fnl.engine import DefaultPredictor
from densepose_fnl.modeling import build_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "mobile_parsing_rcnn_b_s3x.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("complete_ckpt")
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, ["MODEL.TIMMNETS.PRETRAINED", False]))
    torch.save({"model": model.state_dict()}, d / "model.pth")
    return d / "model.pth"


@pytest.fixture
def no_imagenet(monkeypatch):
    """timm.create_model(pretrained=True) fails at once, as it would without network (after a long wait)."""
    create = timm.create_model
    calls = []

    def offline(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        if pretrained:
            raise ConnectionError("no network")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    return calls


def test_predictor_from_a_checkpoint_builds_without_imagenet_weights(checkpoint, no_imagenet):
    cfg = load_config(CONFIG, ["MODEL.WEIGHTS", str(checkpoint)])
    assert cfg.MODEL.TIMMNETS.PRETRAINED  # the config's default asks for them
    predictor = DefaultPredictor(cfg)
    assert no_imagenet == [False]
    assert torch.equal(predictor.model.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                       torch.load(checkpoint)["model"]["roi_heads.box_predictor.cls_score.weight"])


def test_training_from_scratch_still_asks_for_imagenet_weights(no_imagenet):
    with pytest.raises(RuntimeError, match="ImageNet weights for timm model 'spnasnet_100' are not available"):
        build_model(load_config(CONFIG))
    assert no_imagenet == [True]


def test_apply_net_dump_with_a_complete_checkpoint_offline(checkpoint, tmp_path):
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))  # no cached weights
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "apply_net.py"), "dump", CONFIG, str(checkpoint),
                           str(image), "--output", str(tmp_path / "res.pkl")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "res.pkl").is_file()
