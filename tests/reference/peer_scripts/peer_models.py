"""Peer-side helpers shared by the peer scripts (reference venv: detectron2 + DensePose + DensePoseFnL):
the config of a model spec and the BN calibration of a randomly initialised model."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.environ["REFERENCE_PEER_SRC"], "DensePoseFnL"))

from densepose import add_densepose_config  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402


def make_cfg(m):
    """detectron2 config of a spec {"kind": "authors"|"detectron2", "config": yaml, "opts": [...]}, on the CPU."""
    cfg = get_cfg()
    add_densepose_config(cfg)
    if m["kind"] == "authors":
        import backbone  # noqa: F401  (registers the authors' blocks)
        import roi_heads  # noqa: F401
        from config import add_timmnets_config

        add_timmnets_config(cfg)
    cfg.merge_from_file(m["config"])
    cfg.merge_from_list(m["opts"] + ["MODEL.DEVICE", "cpu"])
    return cfg


def calibrate(model, image_bgr):
    """Every BN / FrozenBN takes the per-channel mean / variance of its input in one eval forward pass on
    `image_bgr` (pre-hooks, so later layers already see calibrated inputs); returns how many layers."""
    def hook(mod, inputs):
        x = inputs[0].detach()
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    handles = [mod.register_forward_pre_hook(hook) for mod in model.modules()
               if hasattr(mod, "running_mean") and getattr(mod, "running_mean") is not None]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model([{"image": torch.as_tensor(image_bgr.transpose(2, 0, 1).copy())}])
    model.train(was_training)
    for h in handles:
        h.remove()
    return len(handles)
