"""Optimizer, LR scheduler and gradient clipping built from SOLVER.*."""
from .build import (
    NORM_MODULE_TYPES,
    LRMultiplier,
    WarmupParamScheduler,
    amp_enabled,
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    get_optimizer_param_groups,
    lr_at,
    lr_multiplier_from_config,
)

__all__ = ["NORM_MODULE_TYPES", "LRMultiplier", "WarmupParamScheduler", "amp_enabled", "build_gradient_clipper",
           "build_lr_scheduler", "build_optimizer", "get_optimizer_param_groups", "lr_at", "lr_multiplier_from_config"]
