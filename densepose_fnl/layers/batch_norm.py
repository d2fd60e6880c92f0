"""Normalization layers with detectron2's semantics (FrozenBN buffers, all-reduce SyncBN)."""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..utils import comm


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers (never trained).

    Matches detectron2: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, eps 1e-5.
    `num_batches_tracked` is kept as a buffer so BatchNorm state dicts load entry for entry.
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inference-mode batch norm: exports as one BatchNormalization node that runtimes fold into the conv
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of plain FrozenBN may lack num_batches_tracked; BN ones have it
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Recursively replace every BatchNorm2d / SyncBatchNorm in `module` by a FrozenBatchNorm2d
        holding the same statistics (returns the new module when `module` itself is a BN). timm's
        BatchNormAct2d (BN + activation in one module) keeps its activation."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if _has_activation(module):
                frozen = FrozenBatchNormAct2d(module.num_features, module.eps, module.drop, module.act)
            else:
                frozen = FrozenBatchNorm2d(module.num_features, module.eps)
            if module.affine:
                frozen.weight.data.copy_(module.weight.data)
                frozen.bias.data.copy_(module.bias.data)
            if module.running_mean is not None:
                frozen.running_mean.data.copy_(module.running_mean.data)
                frozen.running_var.data.copy_(module.running_var.data)
            if getattr(module, "num_batches_tracked", None) is not None:
                frozen.num_batches_tracked.data.copy_(module.num_batches_tracked.data)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def _has_activation(bn: nn.Module) -> bool:
    """timm's BatchNormAct2d: a BN with `drop` and `act` children applied after normalisation."""
    return isinstance(getattr(bn, "act", None), nn.Module) and isinstance(getattr(bn, "drop", None), nn.Module)


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """FrozenBatchNorm2d followed by dropout and activation (frozen form of timm's BatchNormAct2d)."""

    def __init__(self, num_features: int, eps: float, drop: nn.Module, act: nn.Module):
        super().__init__(num_features, eps)
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """Synchronized BN that works with any torch.distributed backend, gloo on CPU included
    (torch's SyncBatchNorm is GPU-only). Statistics are averaged over all ranks, as detectron2 does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or comm.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        mean = x.mean(dim=[0, 2, 3])
        meansqr = (x * x).mean(dim=[0, 2, 3])
        stats = all_reduce(torch.cat([mean, meansqr], dim=0)) / comm.get_world_size()
        mean, meansqr = torch.split(stats, c)
        var = meansqr - mean * mean
        if self.running_mean is not None:
            self.running_mean += self.momentum * (mean.detach() - self.running_mean)
            self.running_var += self.momentum * (var.detach() - self.running_var)
        invstd = torch.rsqrt(var + self.eps)
        scale = self.weight * invstd
        bias = self.bias - mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class NaiveSyncBatchNormAct2d(NaiveSyncBatchNorm):
    """NaiveSyncBatchNorm followed by dropout and activation (synchronized timm BatchNormAct2d)."""

    def __init__(self, num_features: int, drop: nn.Module, act: nn.Module, **kwargs):
        super().__init__(num_features, **kwargs)
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def get_norm(norm: str, out_channels: int) -> Optional[nn.Module]:
    """"" -> None; "BN", "SyncBN", "FrozenBN", "GN" (32 groups) -> the layer."""
    if not norm:
        return None
    factories = {
        "BN": nn.BatchNorm2d,
        "SyncBN": NaiveSyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "GN": lambda c: nn.GroupNorm(32, c),
    }
    if norm not in factories:
        raise ValueError(f"Unknown norm '{norm}': expected one of {sorted(factories)} or ''")
    return factories[norm](out_channels)


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace the BatchNorm layers of `module` by `norm` ("FrozenBN", "BN" or "SyncBN"), keeping statistics
    and any activation fused into timm's BatchNormAct2d."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm not in ("BN", "SyncBN"):
        raise ValueError(f"Backbone norm must be FrozenBN, BN or SyncBN, got '{norm}'")
    if norm == "BN":
        return module  # timm's layers already are (trainable) BatchNorm2d, with their activations
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, NaiveSyncBatchNorm):
        if _has_activation(module):
            new = NaiveSyncBatchNormAct2d(module.num_features, module.drop, module.act, eps=module.eps,
                                          momentum=module.momentum)
        else:
            new = NaiveSyncBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        new_child = convert_norm(child, norm)
        if new_child is not child:
            module.add_module(name, new_child)
    return module
