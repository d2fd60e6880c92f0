"""DefaultTrainer: the training loop of `train_loop.SimpleTrainer` with everything built from the config
(model, optimizer, LR scheduler, train loader, checkpointer) and the standard hooks (`hooks`):

  per iteration: losses = model(batch); backward; optional gradient clipping; optimizer.step()
  then IterationTimer (`time`), LRScheduler (`lr`, scheduler.step()), PeriodicCheckpointer
  (`model_{iter:07d}.pth` every SOLVER.CHECKPOINT_PERIOD iterations, `model_final.pth` after the last),
  EvalHook (DATASETS.TEST every TEST.EVAL_PERIOD iterations and after the last), PeriodicWriter (console
  line, metrics.json row and TensorBoard scalars every `log_period` iterations, after the first and the last).
`resume_or_load(resume=True)` continues after the iteration recorded in OUTPUT_DIR/last_checkpoint, with
its weights, optimizer (momentum) and scheduler state.
"""
import inspect
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import modeling  # noqa: F401  (registers the model blocks)
from ..checkpoint import DensePoseCheckpointer
from ..data.datasets import register_datasets_from_config
from ..modeling import build_model
from ..modeling import losses as _losses  # noqa: F401  (registers the DensePose losses)
from ..solver import amp_enabled, build_gradient_clipper, build_lr_scheduler, build_optimizer
from ..utils import comm
from . import hooks
from .events import ConsolePrinter, JSONWriter, TensorboardWriter
from .train_loop import HookBase, SimpleTrainer, unwrap_model

logger = logging.getLogger("densepose_fnl.train")

__all__ = ["DefaultTrainer", "QATUnavailableError", "build_qat"]


class QATUnavailableError(RuntimeError):
    """--qat was asked for but densepose_fnl.quantization.build_qat_model cannot be imported."""


def build_qat(cfg, model: nn.Module) -> nn.Module:
    try:
        from ..quantization import build_qat_model
    except ImportError as e:
        raise QATUnavailableError(
            "--qat needs densepose_fnl.quantization.build_qat_model(cfg, float_model), which is not available "
            f"in this checkout ({e})") from e
    return build_qat_model(cfg, model)


def _distributed(model: nn.Module) -> nn.Module:
    """DistributedDataParallel as detectron2 sets it up: unused parameters allowed (a features_only timm
    net may leave its last block unused), buffers (BN statistics) not re-broadcast at each forward."""
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    ddp_args = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in ddp_args
                      else {"broadcast_buffers": False})
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True,
                                               **no_buffer_sync)


class DefaultTrainer(SimpleTrainer):
    """`model` may be given (e.g. a QAT-wrapped model); under torch.distributed it is wrapped in
    DistributedDataParallel. Checkpoints hold model, optimizer, scheduler and iteration.
    Override the `build_*` classmethods, or `build_hooks`, to change a part."""

    def __init__(self, cfg, model: Optional[nn.Module] = None, log_period: int = 20):
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        register_datasets_from_config(cfg)
        if model is None:
            model = build_model(cfg)
        model.train()
        optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DensePoseCheckpointer(
            model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), optimizer=optimizer,
            scheduler=self.scheduler)
        if comm.get_world_size() > 1:
            model = _distributed(model)
        device = next(unwrap_model(model).parameters()).device
        # the loader is built when training starts (resume_or_load may still come)
        super().__init__(model, None, optimizer, build_gradient_clipper(cfg), amp_enabled(cfg, device))
        self.cfg = cfg
        self.device = device
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.log_period = max(1, int(log_period))
        self.storage_window = self.log_period
        self._eval_hook: Optional[hooks.EvalHook] = None
        self.register_hooks(self.build_hooks())

    @staticmethod
    def auto_scale_workers(cfg, num_workers: int):
        """SOLVER.REFERENCE_WORLD_SIZE > 0 (detectron2's semantics): the schedule was written for that many
        processes; on `num_workers` scale the total batch and the LR linearly and the iteration counts
        inversely, so each image is seen as often with the same per-process batch. Returns a copy."""
        cfg = cfg.clone()
        old_world = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
        if old_world == 0 or old_world == num_workers:
            return cfg
        scale = num_workers / old_world
        s = cfg.SOLVER
        bs = int(round(s.IMS_PER_BATCH * scale))
        if bs % num_workers != 0:
            raise ValueError(f"SOLVER.REFERENCE_WORLD_SIZE {old_world} -> {num_workers} processes gives "
                             f"IMS_PER_BATCH {bs}, not divisible by the number of processes")
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        s.IMS_PER_BATCH = bs
        s.BASE_LR *= scale
        s.MAX_ITER = int(round(s.MAX_ITER / scale))
        s.WARMUP_ITERS = int(round(s.WARMUP_ITERS / scale))
        s.STEPS = tuple(int(round(x / scale)) for x in s.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        s.CHECKPOINT_PERIOD = int(round(s.CHECKPOINT_PERIOD / scale))
        s.REFERENCE_WORLD_SIZE = num_workers
        logger.info("Auto-scaled the config from %d to %d processes: IMS_PER_BATCH %d, BASE_LR %g, MAX_ITER %d",
                    old_world, num_workers, bs, s.BASE_LR, s.MAX_ITER)
        if was_frozen:
            cfg.freeze()
        return cfg

    # ------------------------------------------------------------------ building blocks (overridable)
    @classmethod
    def build_train_loader(cls, cfg):
        from ..data import build_detection_train_loader

        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        from ..data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        from ..evaluation.build import build_evaluator

        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model: nn.Module) -> "OrderedDict[str, Dict[str, Dict[str, float]]]":
        """Evaluate `model` on every dataset of DATASETS.TEST: {dataset: {task: {metric: value}}}."""
        from ..evaluation import inference_on_dataset
        from ..evaluation.testing import print_results_tables

        register_datasets_from_config(cfg)
        results: "OrderedDict[str, Any]" = OrderedDict()
        for name in cfg.DATASETS.TEST:
            loader = cls.build_test_loader(cfg, name)
            evaluator = cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator, desc=f"Evaluating {name}")
            if comm.is_main_process():
                print_results_tables({name: results[name]}, print_fn=logger.info)
        comm.synchronize()
        return results

    def build_writers(self) -> List[Any]:
        """Console, OUTPUT_DIR/metrics.json and TensorBoard (main process only)."""
        if not comm.is_main_process():
            return []
        writers: List[Any] = [ConsolePrinter(self.max_iter, self.log_period)]
        if self.cfg.OUTPUT_DIR:
            os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
            writers.append(JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.log_period))
            writers.append(TensorboardWriter(self.cfg.OUTPUT_DIR, self.log_period))
        return writers

    def build_hooks(self) -> List[HookBase]:
        cfg = self.cfg
        self._eval_hook = (hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, unwrap_model(self.model)))
                           if len(cfg.DATASETS.TEST) else None)
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
            hooks.PeriodicCheckpointer(self.checkpointer, int(cfg.SOLVER.CHECKPOINT_PERIOD), self.max_iter),
            self._eval_hook,
            hooks.PeriodicWriter(self.build_writers(), self.log_period),
        ]

    # ------------------------------------------------------------------ checkpoints
    def resume_or_load(self, resume: bool = True, load_weights: bool = True) -> None:
        """resume and OUTPUT_DIR/last_checkpoint exists: load it all and continue after its iteration;
        otherwise load MODEL.WEIGHTS (model only) if `load_weights`, and start at iteration 0."""
        path = self.cfg.MODEL.WEIGHTS if load_weights else ""
        checkpoint = self.checkpointer.resume_or_load(path, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            group = max(self.optimizer.param_groups, key=lambda g: len(g["params"]))
            logger.info("Resuming at iteration %d (checkpoint of iteration %d), lr %.6g", self.start_iter,
                        self.start_iter - 1, float(group["lr"]))
        else:
            self.start_iter = 0

    # ------------------------------------------------------------------ training
    def train(self) -> Dict[str, Any]:
        """Run iterations start_iter .. MAX_ITER - 1; returns the last evaluation results (may be empty)."""
        if self.data_loader is None:
            self.data_loader = self.build_train_loader(self.cfg)
        super().train(self.start_iter, self.max_iter)
        comm.synchronize()
        return self.last_eval_results

    @property
    def last_eval_results(self) -> Dict[str, Any]:
        return self._eval_hook.last_results if self._eval_hook is not None else {}
