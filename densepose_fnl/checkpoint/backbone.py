"""ImageNet weights of a timm classifier -> `backbone.bottom_up` of a detector (fine-tuning start).

timm checkpoints (`timm.create_model(name).state_dict()`, or the `.pth` / `.safetensors` files timm
downloads) hold the full classifier: stem, blocks, and the head (`conv_head`, `bn2`, `classifier`)
that a `features_only` backbone does not have. The head entries are dropped (and listed in the log);
every backbone entry must be present with the right shape (strict by default) — a partly random
backbone is an error, not a warning. The rest of the detector stays at its init, as it should when
starting a training from ImageNet weights; the log says how many entries that is.
"""
import logging
import os
from typing import Dict, Union

import torch
from torch import nn

from .formats import load_checkpoint_file, normalize_state_dict
from .matching import LoadReport, load_model_state

logger = logging.getLogger(__name__)


def _bottom_up(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", model)
    return getattr(backbone, "bottom_up", backbone)


def _read_weights(path: str, trusted: bool) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Backbone weights not found: {path}")
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return load_checkpoint_file(path, trusted=trusted)["model"]


def load_timm_backbone_weights(model: nn.Module, weights: Union[str, Dict[str, torch.Tensor]], strict: bool = True,
                               trusted: bool = False) -> LoadReport:
    """Load timm ImageNet weights (a file path or a state dict) into `model.backbone.bottom_up`.

    `model`: a detector (GeneralizedRCNN), a BiFPN/FPN backbone, or the timm backbone itself.
    Returns the LoadReport of the backbone load. Raises CheckpointMismatchError (strict) if a backbone
    entry is missing or has the wrong shape (e.g. weights of another timm model)."""
    source = weights if isinstance(weights, str) else "<state dict>"
    state_dict = _read_weights(weights, trusted) if isinstance(weights, str) else dict(weights)
    state_dict, prefix = normalize_state_dict(state_dict)
    for p in ("backbone.bottom_up.", "bottom_up."):  # a detector checkpoint: take its backbone
        if any(k.startswith(p) for k in state_dict):
            state_dict = {k[len(p):]: v for k, v in state_dict.items() if k.startswith(p)}
            break
    target = _bottom_up(model)
    children = {name for name, _ in target.named_children()}
    kept = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in children}
    dropped = sorted(k for k in state_dict if k not in kept)
    if dropped:
        logger.info("Backbone weights %s: %d classifier-head entries not used by the features-only backbone: %s",
                    source, len(dropped), ", ".join(dropped))
    report = load_model_state(target, kept, strict=strict, source=source, stripped_prefix=prefix)
    if target is not model:
        rest = len(model.state_dict()) - len(target.state_dict())
        logger.info("The other %d entries of the model (neck, RPN, heads) keep their initial values.", rest)
    return report
