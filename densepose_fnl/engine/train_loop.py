"""The training loop made of hooks (detectron2's TrainerBase / HookBase / SimpleTrainer).

`TrainerBase.train(start_iter, max_iter)` runs, for each iteration: every hook's `before_step`, `run_step`,
every hook's `after_step` (in registration order); `before_train` / `after_train` around the loop
(`after_train` also when an iteration raises). `SimpleTrainer.run_step` is one optimisation step:
losses = model(batch); backward; optional gradient clipping; optimizer.step(); the losses (averaged over
processes) go to the `EventStorage`. Checkpoints, LR schedule, evaluation, timing and metric writers are
hooks (`engine.hooks`).
"""
import logging
import math
import time
import weakref
from contextlib import nullcontext
from typing import Callable, Iterable, List, Optional

import torch
from torch import nn

from ..utils import comm
from .events import EventStorage

logger = logging.getLogger("densepose_fnl.train")

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class HookBase:
    """Called by the trainer around the loop and each iteration; `self.trainer` is set on registration
    (a weak proxy: hooks never keep the trainer alive)."""

    trainer: "TrainerBase" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TrainerBase:
    """Iterations `start_iter .. max_iter - 1` with hooks. `iter` is the iteration being run (after the loop:
    max_iter); `storage` the EventStorage of the run."""

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: Optional[EventStorage] = None
        self.storage_window = 20

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        for h in hooks:
            if h is None:
                continue
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.start_iter, self.max_iter = int(start_iter), int(max_iter)
        self.iter = self.start_iter
        logger.info("Starting training from iteration %d to %d", self.start_iter, self.max_iter - 1)
        self.storage = EventStorage(self.start_iter, window_size=self.storage_window)
        try:
            self.model_train_mode()
            self._call("before_train")
            for self.iter in range(self.start_iter, self.max_iter):
                self.storage.iter = self.iter
                self._call("before_step")
                self.run_step()
                self._call("after_step")
            self.iter = self.max_iter
        finally:
            self._call("after_train")

    def _call(self, stage: str) -> None:
        for h in self._hooks:
            getattr(h, stage)()

    def model_train_mode(self) -> None:
        """Put the model in training mode once before the loop (evaluation restores the mode it found)."""

    def run_step(self) -> None:
        raise NotImplementedError


class SimpleTrainer(TrainerBase):
    """One optimisation step per iteration on batches of `data_loader`.

    grad_clipper: a callable on the parameter list (SOLVER.CLIP_GRADIENTS) or None; amp: CUDA autocast with a
    GradScaler. Non-finite losses stop training with FloatingPointError naming the iteration."""

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 grad_clipper: Optional[Callable] = None, amp: bool = False):
        super().__init__()
        self.model = model
        self.data_loader = data_loader
        self._data_iter = None
        self.optimizer = optimizer
        self.grad_clipper = grad_clipper
        self.amp = amp
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp else None

    @property
    def data_iter(self):
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        return self._data_iter

    def model_train_mode(self) -> None:
        self.model.train()

    def run_step(self) -> None:
        t0 = time.perf_counter()
        data = next(self.data_iter)
        data_time = time.perf_counter() - t0
        with torch.autocast("cuda") if self.amp else nullcontext():
            loss_dict = self.model(data)
        if not isinstance(loss_dict, dict):
            raise TypeError(f"The model returned {type(loss_dict).__name__} in training; expected a dict of losses")
        total = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            total.backward()
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"Loss became infinite or NaN at iteration {self.iter}: {values}")
        if self.grad_clipper is not None:
            self.grad_clipper([p for g in self.optimizer.param_groups for p in g["params"]])
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        values = comm.reduce_dict_mean(values)
        self.storage.put_scalars(total_loss=sum(values.values()), **values)
        self.storage.put_scalar("data_time", data_time, smoothing=False)
