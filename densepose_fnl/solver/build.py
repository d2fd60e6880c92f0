"""Optimizer, LR schedule and gradient clipping from SOLVER.* (detectron2's `solver/build.py` semantics).

* SGD with SOLVER.MOMENTUM / NESTEROV; weight decay WEIGHT_DECAY, WEIGHT_DECAY_NORM for the parameters of
  normalisation layers (BN, SyncBN, GN, LN, ...), and for the other biases BASE_LR * BIAS_LR_FACTOR and
  WEIGHT_DECAY_BIAS (detectron2 <= 0.3 precedence: a norm layer's bias counts as a norm parameter); the CSE
  mesh embedders' parameters named `features` / `embeddings` train at BASE_LR * CSE.FEATURES_LR_FACTOR /
  EMBEDDING_LR_FACTOR (detectron2 DensePose's trainer).
* LR(iter) = BASE_LR * warm-up(iter) * GAMMA ** (number of STEPS <= iter), the warm-up ramping linearly
  from WARMUP_FACTOR to 1 over WARMUP_ITERS ("linear") or staying at WARMUP_FACTOR ("constant"); built
  from fvcore param schedulers and applied by `LRMultiplier` (a torch LR scheduler stepped once per
  iteration, so its state — last_epoch = iterations done — is checkpointed and resumed).
* SOLVER.CLIP_GRADIENTS: "value" (clamp each gradient element), "norm" (each parameter's gradient norm
  clipped separately, as detectron2) or "full_model" (one norm over all parameters).
"""
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

logger = logging.getLogger(__name__)

NORM_MODULE_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1/2/3d, SyncBatchNorm, our NaiveSyncBatchNorm, timm BN+act
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def get_optimizer_param_groups(model: nn.Module, base_lr: float, weight_decay: float, weight_decay_norm: float,
                               bias_lr_factor: float = 1.0, weight_decay_bias: Optional[float] = None,
                               lr_overrides: Optional[Dict[str, float]] = None) -> List[Dict[str, Any]]:
    """Trainable parameters grouped by (lr, weight_decay), each counted once, in module order. `lr_overrides`
    {parameter name within its module: lr} wins over the rules above (detectron2's `overrides`)."""
    lr_overrides = lr_overrides or {}
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    groups: Dict[tuple, List[nn.Parameter]] = {}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = base_lr, weight_decay
            if isinstance(module, NORM_MODULE_TYPES):
                wd = weight_decay_norm
            elif name == "bias":
                lr, wd = base_lr * bias_lr_factor, weight_decay_bias
            lr = lr_overrides.get(name, lr)
            groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    cse = cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE
    # the CSE mesh embedders' vertex features / embedding tables (detectron2 DensePose's Trainer.build_optimizer)
    lr_overrides = {"features": s.BASE_LR * cse.FEATURES_LR_FACTOR, "embeddings": s.BASE_LR * cse.EMBEDDING_LR_FACTOR}
    groups = get_optimizer_param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.BIAS_LR_FACTOR,
                                        s.WEIGHT_DECAY_BIAS, lr_overrides)
    if not groups:
        raise ValueError("The model has no trainable parameters")
    return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                           weight_decay=s.WEIGHT_DECAY)


class WarmupParamScheduler(CompositeParamScheduler):
    """`scheduler` preceded by a warm-up over the first `warmup_length` (fraction of training) that starts
    at `warmup_factor * scheduler(0)` and ends at `scheduler(warmup_length)` (linear) or stays constant."""

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float,
                 warmup_method: str = "linear"):
        end = scheduler(warmup_length)
        start = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup = ConstantParamScheduler(start)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start, end)
        else:
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{warmup_method}'")
        super().__init__([warmup, scheduler], interval_scaling=["rescaled", "fixed"],
                         lengths=[warmup_length, 1 - warmup_length])


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """LR of every group = its initial LR * multiplier(iteration / max_iter); step() once per iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: Callable[[float], float], max_iter: int,
                 last_iter: int = -1):
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> Dict[str, Any]:
        # the multiplier is rebuilt from the config; only the position and the base LRs are state
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        m = self._multiplier(min(self.last_epoch / self._max_iter, 1.0 - 1e-12))
        return [base_lr * m for base_lr in self.base_lrs]


def lr_multiplier_from_config(cfg) -> ParamScheduler:
    s = cfg.SOLVER
    max_iter = int(s.MAX_ITER)
    if max_iter <= 0:
        raise ValueError(f"SOLVER.MAX_ITER must be > 0, got {max_iter}")
    if s.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        raise NotImplementedError(f"SOLVER.LR_SCHEDULER_NAME '{s.LR_SCHEDULER_NAME}': only WarmupMultiStepLR is "
                                  "supported")
    steps = [int(x) for x in s.STEPS if int(x) <= max_iter]
    if len(steps) != len(s.STEPS):
        logger.warning("SOLVER.STEPS %s beyond SOLVER.MAX_ITER %d are ignored", list(s.STEPS), max_iter)
    if steps != sorted(steps):
        raise ValueError(f"SOLVER.STEPS must be increasing, got {list(s.STEPS)}")
    sched: ParamScheduler = MultiStepParamScheduler(
        values=[s.GAMMA ** k for k in range(len(steps) + 1)], milestones=steps, num_updates=max_iter)
    warmup_iters = int(s.WARMUP_ITERS)
    if warmup_iters > 0:
        sched = WarmupParamScheduler(sched, s.WARMUP_FACTOR, min(warmup_iters / max_iter, 1.0), s.WARMUP_METHOD)
    return sched


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    return LRMultiplier(optimizer, lr_multiplier_from_config(cfg), cfg.SOLVER.MAX_ITER)


def lr_at(cfg, iteration: int) -> float:
    """BASE_LR times the schedule at `iteration` (what the optimizer uses for that iteration)."""
    return cfg.SOLVER.BASE_LR * lr_multiplier_from_config(cfg)(min(iteration / cfg.SOLVER.MAX_ITER, 1.0 - 1e-12))


def build_gradient_clipper(cfg) -> Optional[Callable[[Iterable[nn.Parameter]], None]]:
    """A function clipping the gradients of the given parameters in place, or None when disabled."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    value, norm_type, kind = float(c.CLIP_VALUE), float(c.NORM_TYPE), c.CLIP_TYPE
    if kind == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(list(params), value)
    if kind == "norm":
        def clip_each(params):
            for p in params:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, value, norm_type)
        return clip_each
    if kind == "full_model":
        return lambda params: torch.nn.utils.clip_grad_norm_(
            [p for p in params if p.grad is not None], value, norm_type)
    raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got '{kind}'")


def amp_enabled(cfg, device: torch.device) -> bool:
    """SOLVER.AMP.ENABLED on CUDA; on CPU it is ignored (with a warning): mixed precision is GPU-only."""
    if not cfg.SOLVER.AMP.ENABLED:
        return False
    if torch.device(device).type != "cuda":
        logger.warning("SOLVER.AMP.ENABLED is ignored on %s: automatic mixed precision is used on GPU only", device)
        return False
    return True


__all__ = ["build_optimizer", "build_lr_scheduler", "build_gradient_clipper", "get_optimizer_param_groups",
           "LRMultiplier", "WarmupParamScheduler", "lr_multiplier_from_config", "lr_at", "amp_enabled",
           "NORM_MODULE_TYPES"]
