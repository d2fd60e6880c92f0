"""Training hooks (detectron2's engine/hooks.py), registered by `DefaultTrainer.build_hooks` in this order:
IterationTimer, LRScheduler, PeriodicCheckpointer, EvalHook, PeriodicWriter — so an iteration's
checkpoint is written before it is evaluated, and its metrics row holds the evaluation results."""
import logging
import time
from typing import Any, Callable, Dict, List

from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer

from ..utils import comm
from .train_loop import HookBase

logger = logging.getLogger("densepose_fnl.train")

__all__ = ["IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]


class IterationTimer(HookBase):
    """Puts `time` (seconds of the iteration, hooks included up to this one's after_step) and logs the total."""

    def before_train(self) -> None:
        self._start = time.perf_counter()

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._t0, smoothing=False)

    def after_train(self) -> None:
        total = time.perf_counter() - self._start
        done = max(self.trainer.iter - self.trainer.start_iter, 0)
        logger.info("Total training time: %.1f s (%d iterations, %.3f s / it)", total, done, total / max(done, 1))


class LRScheduler(HookBase):
    """Puts the `lr` of the iteration (of the largest parameter group), then steps the scheduler."""

    def __init__(self, optimizer, scheduler):
        self.optimizer, self.scheduler = optimizer, scheduler

    def after_step(self) -> None:
        group = max(self.optimizer.param_groups, key=lambda g: len(g["params"]))
        self.trainer.storage.put_scalar("lr", float(group["lr"]), smoothing=False)
        self.scheduler.step()


class PeriodicCheckpointer(_FvcorePeriodicCheckpointer, HookBase):
    """fvcore's PeriodicCheckpointer as a hook: `model_{iter:07d}.pth` every `period` iterations (the
    iteration just done; period <= 0: never) and `model_final.pth` after the last, each with `iteration`."""

    def __init__(self, checkpointer, period: int, max_iter: int):
        # fvcore takes a period for every checkpointer: "never" is one period past the end
        super().__init__(checkpointer, period if period > 0 else max_iter + 1, max_iter=max_iter)

    def after_step(self) -> None:
        self.step(self.trainer.iter)


class EvalHook(HookBase):
    """Runs `eval_function()` every `period` iterations and after the last one (period 0: at the end only;
    < 0: never) and puts the flattened results into the storage (main process)."""

    def __init__(self, period: int, eval_function: Callable[[], Dict[str, Any]]):
        self.period, self.eval_function = int(period), eval_function
        self.last_results: Dict[str, Any] = {}

    def after_step(self) -> None:
        nxt = self.trainer.iter + 1
        last = nxt == self.trainer.max_iter
        if (self.period > 0 and nxt % self.period == 0) or (last and self.period >= 0):
            self._do_eval()

    def _do_eval(self) -> None:
        from ..evaluation.testing import flatten_results

        results = self.eval_function()
        self.last_results = results
        if comm.is_main_process() and results:
            flat = flatten_results(results if len(results) > 1 else next(iter(results.values())))
            self.trainer.storage.put_scalars(smoothing=False, **flat)


class PeriodicWriter(HookBase):
    """Writes the storage through `writers` (console, metrics.json, TensorBoard) after the first iteration,
    every `period` iterations and after the last; closes them after training."""

    def __init__(self, writers: List[Any], period: int):
        self.writers, self.period = writers, max(1, int(period))

    def after_step(self) -> None:
        nxt = self.trainer.iter + 1
        if nxt % self.period == 0 or nxt == self.trainer.max_iter or nxt - self.trainer.start_iter == 1:
            for w in self.writers:
                w.write(self.trainer.storage)

    def after_train(self) -> None:
        for w in self.writers:
            if hasattr(w, "close"):
                w.close()
