"""Any timm model as a backbone, through timm's `features_only` feature maps (one code path for all)."""
import logging
import re
from typing import Dict, List, Optional, Sequence

import timm
import torch
from torch import nn

from ...layers import FrozenBatchNorm2d, convert_norm
from ..registry import BACKBONE_REGISTRY
from .backbone import Backbone

logger = logging.getLogger(__name__)


def _create_timm_model(
    name: str, out_indices: Sequence, feature_location: str, pretrained: bool, pretrained_file: str,
    scriptable: bool, exportable: bool,
) -> nn.Module:
    kwargs = dict(scriptable=scriptable, exportable=exportable)
    if not _by_module_path(out_indices):
        kwargs.update(features_only=True, out_indices=tuple(out_indices))
        if feature_location:
            kwargs["feature_location"] = feature_location
    if name not in timm.list_models():
        raise ValueError(f"MODEL.TIMMNETS.NAME = '{name}' is not a timm model (see timm.list_models())")
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_file:
        import os

        if not os.path.isfile(pretrained_file):
            raise FileNotFoundError(f"MODEL.TIMMNETS.PRETRAINED_FILE not found: {pretrained_file}")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file), **kwargs)
    try:  # timm's local cache (e.g. HF_HUB_OFFLINE=1 with the weights already cached)
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # no network here: say what to do instead of a stack of HTTP errors
        raise RuntimeError(
            f"ImageNet weights for timm model '{name}' are not available locally ({type(e).__name__}). "
            "Set MODEL.TIMMNETS.PRETRAINED_FILE to a local weights file, or MODEL.TIMMNETS.PRETRAINED False "
            "to start from random init."
        ) from e


def _by_module_path(out_features: Sequence) -> bool:
    """OUT_FEATURES as module paths ("blocks.3") instead of timm feature indices."""
    return len(out_features) > 0 and all(isinstance(f, str) for f in out_features)


def _capture_output(module: nn.Module, inputs, output) -> None:
    # stored on the module itself, so deep copies of the model capture into their own modules
    module._captured_output = output


class _TruncatedTimmModel(nn.Module):
    """A full timm model cut after the last requested module; outputs of the requested modules are
    captured with forward hooks while `forward_features` runs. This reproduces the feature layout of
    DensePoseFnL's earlier gen-efficientnet backbones (stage outputs blocks.1/2/3/5, "s1,s2,s3,s5")."""

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        super().__init__()
        self.model = model
        self.paths = list(paths)
        self._truncate_after(self.paths[-1])
        for path in self.paths:
            model.get_submodule(path).register_forward_hook(_capture_output)

    def _truncate_after(self, last: str) -> None:
        parent, parts = self.model, last.split(".")
        for depth, part in enumerate(parts):
            names = [n for n, _ in parent.named_children()]
            if part not in names:
                raise ValueError(f"MODEL.TIMMNETS.OUT_FEATURES: '{last}' is not a module of this timm model")
            for later in names[names.index(part) + 1:]:
                if isinstance(parent, nn.Sequential):
                    del parent._modules[later]  # later stages are never run
                else:
                    setattr(parent, later, nn.Identity())  # e.g. conv_head, bn2, classifier
            parent = getattr(parent, part)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        self.model.forward_features(x)
        outputs = []
        for p in self.paths:
            module = self.model.get_submodule(p)
            outputs.append(module._captured_output)
            module._captured_output = None
        return outputs


def _feature_layout(model: nn.Module, out_features: Sequence) -> List[dict]:
    """[{"module", "num_chs", "reduction"}] of the backbone outputs."""
    if hasattr(model, "feature_info"):
        return [dict(module=d["module"], num_chs=d["num_chs"], reduction=d["reduction"])
                for d in model.feature_info.get_dicts()]
    size = 256
    with torch.no_grad():
        was_training = model.training
        outs = model.eval()(torch.zeros(1, 3, size, size))
        model.train(was_training)
    return [dict(module=p, num_chs=o.shape[1], reduction=size // o.shape[-1]) for p, o in zip(out_features, outs)]


def _modules_up_to_stride4(model: nn.Module, layout: List[dict]) -> List[str]:
    """Top-level modules (or `blocks.i` stages) up to and including the one that makes the stride-4 feature."""
    stride4 = [d for d in layout if d["reduction"] == 4]
    if not stride4:
        return []
    target = stride4[-1]["module"]
    m = re.match(r"blocks\.(\d+)", target)
    names = []
    for child_name, _ in model.named_children():
        if m and child_name == "blocks":
            names += [f"blocks.{i}" for i in range(int(m.group(1)) + 1)]
            break
        names.append(child_name)
        if target == child_name or target.startswith(child_name + "."):
            break
    return names


class TimmBackbone(Backbone):
    """timm `features_only` model whose feature maps are returned as a dict.

    The timm model's submodules are adopted as this module's own children, so parameter names are
    timm's (`conv_stem.weight`, `blocks.0.0.conv_dw.weight`, ...) exactly as in DensePoseFnL checkpoints.
    """

    def __init__(
        self,
        name: str,
        out_indices: Sequence[int],
        feature_names: Optional[Sequence[str]] = None,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
        feature_location: str = "expansion",
        pretrained: bool = False,
        pretrained_file: str = "",
        scriptable: bool = False,
        exportable: bool = False,
    ):
        super().__init__()
        if not out_indices:
            raise ValueError("MODEL.TIMMNETS.OUT_FEATURES must list the timm feature indices, e.g. (1, 2, 3, 4)")
        model = _create_timm_model(
            name, out_indices, feature_location, pretrained, pretrained_file, scriptable, exportable
        )
        if _by_module_path(out_indices):
            model = _TruncatedTimmModel(model, out_indices)
        model = convert_norm(model, norm)
        layout = _feature_layout(model, out_indices)
        inner = model.model if isinstance(model, _TruncatedTimmModel) else model
        self._freeze(inner, layout, freeze_at)
        # adopt the timm model's children; keep the model itself (unregistered) for its forward
        for child_name, child in inner.named_children():
            self.add_module(child_name, child)
        self.__dict__["_timm_model"] = model

        names = list(feature_names) if feature_names else [f"s{i}" for i in range(1, len(out_indices) + 1)]
        if len(names) != len(out_indices):
            raise ValueError(
                f"{len(names)} feature names {names} for {len(out_indices)} timm features {tuple(out_indices)}"
            )
        self._out_features = names
        self._out_feature_channels = {n: d["num_chs"] for n, d in zip(names, layout)}
        self._out_feature_strides = {n: d["reduction"] for n, d in zip(names, layout)}
        self.timm_name = name

    @staticmethod
    def _freeze(model: nn.Module, layout: List[dict], freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        frozen = _modules_up_to_stride4(model, layout)
        frozen = frozen if freeze_at >= 2 else frozen[:2]
        for path in frozen:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            module = getattr(parent, leaf) if not leaf.isdigit() else parent[int(leaf)]
            for p in module.parameters():
                p.requires_grad_(False)
            frozen_module = FrozenBatchNorm2d.convert_frozen_batchnorm(module)
            if frozen_module is not module:
                if leaf.isdigit():
                    parent[int(leaf)] = frozen_module
                else:
                    setattr(parent, leaf, frozen_module)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = self._timm_model(x)
        return dict(zip(self._out_features, features))

    def __deepcopy__(self, memo):
        # nn.Module deep copy keeps the adopted children shared with the hidden timm model
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        import copy

        for k, v in self.__dict__.items():
            new.__dict__[k] = copy.deepcopy(v, memo)
        return new


def timm_backbone_from_config(cfg, input_shape=None, feature_names=None) -> TimmBackbone:
    t = cfg.MODEL.TIMMNETS
    if t.NORM not in ("FrozenBN", "BN", "SyncBN"):
        raise ValueError(f"MODEL.TIMMNETS.NORM must be FrozenBN, BN or SyncBN, got '{t.NORM}'")
    return TimmBackbone(
        name=t.NAME,
        out_indices=list(t.OUT_FEATURES),
        feature_names=feature_names,
        norm=t.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        feature_location=t.FEATURE_LOCATION,
        # MODEL.WEIGHTS (a complete checkpoint, loaded after building) overwrites ImageNet weights anyway:
        # inference, evaluation and export from a checkpoint never look for them
        pretrained=t.PRETRAINED and not cfg.MODEL.WEIGHTS,
        pretrained_file=t.PRETRAINED_FILE,
        scriptable=t.SCRIPTABLE,
        exportable=t.EXPORTABLE,
    )


def timm_feature_names(cfg) -> Optional[List[str]]:
    """DensePoseFnL names the timm features by position through MODEL.FPN.IN_FEATURES."""
    names = list(cfg.MODEL.FPN.IN_FEATURES)
    n = len(cfg.MODEL.TIMMNETS.OUT_FEATURES)
    if names and len(names) != n:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES {names} must name the {n} timm features MODEL.TIMMNETS.OUT_FEATURES "
            f"{tuple(cfg.MODEL.TIMMNETS.OUT_FEATURES)} in order"
        )
    return names or None


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape=None) -> TimmBackbone:
    return timm_backbone_from_config(cfg, input_shape, timm_feature_names(cfg))
