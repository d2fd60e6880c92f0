"""Set batch-norm statistics from data, layer by layer (for randomly initialised models: their default
statistics make activations explode, so neither the detections nor the timings would be realistic)."""
from typing import Callable, Iterable

import torch
from torch import nn

from ..layers import FrozenBatchNorm2d
from ..layers.batch_norm_folding import folding_suspended


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, run_batches: Callable[[], Iterable], momentum: float = 1.0) -> int:
    """Run `run_batches()` (an iterable whose iteration drives forward passes of `model`) with every
    BatchNorm / FrozenBN normalising by, and recording, the statistics of its current input.
    Later layers therefore see already-calibrated inputs. Returns how many layers were calibrated."""
    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.modules.batchnorm._BatchNorm))]

    def record(module, inputs):
        x = inputs[0].float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        module.running_mean.mul_(1 - momentum).add_(momentum * mean)
        module.running_var.mul_(1 - momentum).add_(momentum * var)

    handles = [m.register_forward_pre_hook(record) for m in norms]
    was_training = model.training
    model.eval()
    try:
        with folding_suspended():  # each BN must see its conv's own output
            for _ in run_batches():
                pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(norms)
