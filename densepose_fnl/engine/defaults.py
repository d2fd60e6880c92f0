"""detectron2-style training: argument parser, setup (output dir, logging, seed) and `DefaultTrainer`.

The loop (one iteration = one batch of SOLVER.IMS_PER_BATCH images over all processes):
  losses = model(batch); backward; optional gradient clipping; optimizer.step(); scheduler.step()
then, in this order: log scalars (losses, total_loss, lr, time, data_time), checkpoint every
SOLVER.CHECKPOINT_PERIOD iterations (`model_{iter:07d}.pth`, iteration = the one just done) and
`model_final.pth` at the end, evaluation every TEST.EVAL_PERIOD iterations and at the end (on
DATASETS.TEST), and every `log_period` iterations a console line, a metrics.json line and TensorBoard scalars.
`resume_or_load(resume=True)` continues after the iteration recorded in OUTPUT_DIR/last_checkpoint, with
its weights, optimizer (momentum) and scheduler state.
"""
import argparse
import logging
import math
import os
import random
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .. import modeling  # noqa: F401  (registers the model blocks)
from ..modeling import losses as _losses  # noqa: F401  (registers the DensePose losses)
from ..checkpoint import DensePoseCheckpointer
from ..modeling import build_model
from ..solver import amp_enabled, build_gradient_clipper, build_lr_scheduler, build_optimizer
from . import comm
from .events import ConsolePrinter, EventStorage, JSONWriter, TensorboardWriter

logger = logging.getLogger("densepose_fnl.train")

__all__ = ["QATUnavailableError", "build_qat", "default_argument_parser", "default_setup", "setup_logging",
           "seed_all_rng", "DefaultTrainer",
           "print_results_tables", "flatten_results"]


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        epilog=epilog or (
            "Examples:\n"
            "  train:     tools/train_net.py --config-file configs/synthetic/mobile_parsing_rcnn_b_synthetic.yaml\n"
            "  resume:    tools/train_net.py --config-file C --resume\n"
            "  evaluate:  tools/train_net.py --config-file C --eval-only MODEL.WEIGHTS output/model_final.pth\n"
            "  exported:  tools/train_net.py --config-file C --eval-only --runtime onnxruntime "
            "MODEL.WEIGHTS model.onnx\n"
            "  2 procs:   tools/train_net.py --config-file C --num-gpus 2   (processes on CPU, GPUs with CUDA)\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last_checkpoint (else start from MODEL.WEIGHTS, iteration 0)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine: one per GPU with CUDA; on CPU, that many gloo processes")
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    p.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                   help="initialization URL for torch.distributed; 'auto' picks a free local port (one machine)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware training: wrap the loaded float model with "
                        "densepose_fnl.quantization.build_qat_model")
    p.add_argument("--runtime", choices=["pytorch", "onnxruntime"], default="pytorch",
                   help="with --eval-only: pytorch (default) evaluates a checkpoint; onnxruntime evaluates "
                        "MODEL.WEIGHTS = an ONNX file from tools/export_model.py with ONNX Runtime (one process)")
    p.add_argument("--log-period", type=int, default=20, help="iterations between log lines / metrics.json rows")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                   help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01")
    return p


def setup_logging(output_dir: Optional[str], rank: int = 0) -> None:
    """Console (rank 0: INFO, others: WARNING) and OUTPUT_DIR/log.txt (rank 0) / log.txt.rank{r}."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_densepose_fnl", False):
            root.removeHandler(h)
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    console._densepose_fnl = True
    root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}"))
        fh.setFormatter(fmt)
        fh._densepose_fnl = True
        root.addHandler(fh)


def seed_all_rng(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def default_setup(cfg, args=None) -> int:
    """Create OUTPUT_DIR, set up logging, write config.yaml, seed every RNG. Returns the seed used: SEED,
    or a random one (logged) when SEED < 0; each process seeds with seed + rank."""
    rank = comm.get_rank()
    output_dir = cfg.OUTPUT_DIR
    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    setup_logging(output_dir, rank)
    logger.info("Rank of this process: %d / world size %d", rank, comm.get_world_size())
    if args is not None:
        logger.info("Command line arguments: %s", vars(args))
    if output_dir and rank == 0:
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", os.path.join(output_dir, "config.yaml"))
    seed = int(cfg.SEED)
    if seed < 0:
        seed = comm.broadcast_int(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
        logger.info("SEED is %d: using the random seed %d", int(cfg.SEED), seed)
    else:
        logger.info("Using the seed %d (SEED)", seed)
    seed_all_rng(seed + rank)
    return seed


def flatten_results(results: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """{"ds": {"bbox": {"AP": 1}}} -> {"ds/bbox/AP": 1} (a single dataset drops its name)."""
    out = {}
    for k, v in results.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_results(v, key))
        else:
            out[key] = float(v)
    return out


def print_results_tables(results: Dict[str, Dict[str, Dict[str, float]]], print_fn=print) -> None:
    """One table per dataset and task (bbox, densepose_gps, ...), values in percent."""
    for ds, tasks in results.items():
        for task, metrics in tasks.items():
            if not isinstance(metrics, dict) or not metrics:
                continue
            names = list(metrics)
            width = max(7, *(len(n) for n in names))
            head = "| " + " | ".join(n.rjust(width) for n in names) + " |"
            sep = "|" + "|".join(":" + "-" * width + ":" for _ in names) + "|"
            row = "| " + " | ".join(f"{metrics[n]:{width}.3f}" for n in names) + " |"
            print_fn(f"{ds} {task}:\n{head}\n{sep}\n{row}")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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


class DefaultTrainer:
    """Builds model, optimizer, LR scheduler, train loader and checkpointer from `cfg`, then `train()`.

    `model` may be given (e.g. a QAT-wrapped model); under torch.distributed it is wrapped in
    DistributedDataParallel. Checkpoints hold model, optimizer, scheduler and iteration."""

    def __init__(self, cfg, model: Optional[nn.Module] = None, log_period: int = 20):
        self.cfg = cfg = cfg.clone()
        if model is None:
            model = build_model(cfg)
        model.train()
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = DensePoseCheckpointer(
            model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), optimizer=self.optimizer,
            scheduler=self.scheduler)
        if comm.get_world_size() > 1:
            device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
            # some backbone layers may feed no output (e.g. the last block of a features_only timm net)
            # buffers (BN statistics) are not re-broadcast at each forward, as detectron2's broadcast_buffers=False
            import inspect

            ddp_args = inspect.signature(nn.parallel.DistributedDataParallel).parameters
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in ddp_args
                              else {"broadcast_buffers": False})
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True,
                                                        **no_buffer_sync)
        self.model = model
        self.device = next(_unwrap(model).parameters()).device
        self.grad_clipper = build_gradient_clipper(cfg)
        self.amp = amp_enabled(cfg, self.device)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.start_iter = 0
        self.iter = 0
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.checkpoint_period = int(cfg.SOLVER.CHECKPOINT_PERIOD)
        self.eval_period = int(cfg.TEST.EVAL_PERIOD)
        self.log_period = max(1, int(log_period))
        self._data_loader = None
        self.last_eval_results: Dict[str, Any] = {}

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
        from ..data import MetadataCatalog
        from ..evaluation import DensePoseCOCOEvaluator
        from ..evaluation.eval_data import EvalDataMissingError, check_eval_data, resolve_eval_data_dir

        meta = MetadataCatalog.get(dataset_name)
        json_file = getattr(meta, "json_file", None)
        if not json_file or not os.path.isfile(json_file):
            raise FileNotFoundError(f"Dataset '{dataset_name}' has no annotation file to evaluate against "
                                    f"(metadata json_file = {json_file})")
        eval_dir = resolve_eval_data_dir(cfg)
        do_dp = cfg.MODEL.DENSEPOSE_ON
        if do_dp:
            try:
                check_eval_data(eval_dir)
            except EvalDataMissingError:
                if dataset_name.startswith("densepose_synthetic"):
                    eval_dir = ensure_synthetic_eval_data(os.path.join(os.path.dirname(os.path.dirname(json_file)),
                                                                       "eval_data"))
                    logger.info("Synthetic set: DensePose AP is scored with the synthetic body mesh geodesics "
                                "in %s (a proxy: the official SMPL eval files are missing)", eval_dir)
                else:
                    logger.warning("DensePose evaluation data missing in %s: only box AP is computed for %s",
                                   eval_dir, dataset_name)
                    do_dp = False
        output_folder = output_folder or (os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
                                          if cfg.OUTPUT_DIR else None)
        return DensePoseCOCOEvaluator(json_file, eval_dir, output_folder,
                                      min_iou_threshold=cfg.DENSEPOSE_EVALUATION.MIN_IOU_THRESHOLD,
                                      evaluate_densepose=do_dp)

    @classmethod
    def test(cls, cfg, model: nn.Module) -> "OrderedDict[str, Dict[str, Dict[str, float]]]":
        """Evaluate `model` on every dataset of DATASETS.TEST: {dataset: {task: {metric: value}}}."""
        from ..evaluation import inference_on_dataset

        results: "OrderedDict[str, Any]" = OrderedDict()
        for name in cfg.DATASETS.TEST:
            loader = cls.build_test_loader(cfg, name)
            evaluator = cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator, desc=f"Evaluating {name}")
            if comm.is_main_process():
                print_results_tables({name: results[name]}, print_fn=logger.info)
        comm.synchronize()
        return results

    # ------------------------------------------------------------------ checkpoints
    def resume_or_load(self, resume: bool = True, load_weights: bool = True) -> None:
        """resume and OUTPUT_DIR/last_checkpoint exists: load it all and continue after its iteration;
        otherwise load MODEL.WEIGHTS (model only) if `load_weights`, and start at iteration 0."""
        path = self.cfg.MODEL.WEIGHTS if load_weights else ""
        checkpoint = self.checkpointer.resume_or_load(path, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            logger.info("Resuming at iteration %d (checkpoint of iteration %d), lr %.6g", self.start_iter,
                        self.start_iter - 1, self._current_lr())
        else:
            self.start_iter = 0

    def _current_lr(self) -> float:
        group = max(self.optimizer.param_groups, key=lambda g: len(g["params"]))
        return float(group["lr"])

    # ------------------------------------------------------------------ training
    def run_step(self, data_iter, storage: EventStorage) -> None:
        t0 = time.perf_counter()
        data = next(data_iter)
        data_time = time.perf_counter() - t0
        autocast = torch.autocast("cuda") if self.amp else nullcontext()
        with autocast:
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
        storage.put_scalars(total_loss=sum(values.values()), **values)
        storage.put_scalar("data_time", data_time, smoothing=False)

    def _do_eval(self, storage: EventStorage) -> None:
        results = self.test(self.cfg, _unwrap(self.model))
        self.last_eval_results = results
        if comm.is_main_process() and results:
            flat = flatten_results(results if len(results) > 1 else next(iter(results.values())))
            storage.put_scalars(smoothing=False, **flat)

    def train(self) -> Dict[str, Any]:
        """Run iterations start_iter .. MAX_ITER - 1; returns the last evaluation results (may be empty)."""
        cfg = self.cfg
        main = comm.is_main_process()
        writers: List[Any] = []
        if main:
            writers.append(ConsolePrinter(self.max_iter, self.log_period))
            if cfg.OUTPUT_DIR:
                os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
                writers.append(JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), self.log_period))
                writers.append(TensorboardWriter(cfg.OUTPUT_DIR, self.log_period))
        logger.info("Starting training from iteration %d to %d", self.start_iter, self.max_iter - 1)
        if self._data_loader is None:
            self._data_loader = self.build_train_loader(cfg)
        data_iter = iter(self._data_loader)
        storage = EventStorage(self.start_iter, window_size=self.log_period)
        self.model.train()
        t_start = time.perf_counter()
        try:
            for self.iter in range(self.start_iter, self.max_iter):
                storage.iter = self.iter
                t0 = time.perf_counter()
                self.run_step(data_iter, storage)
                storage.put_scalar("lr", self._current_lr(), smoothing=False)
                self.scheduler.step()
                storage.put_scalar("time", time.perf_counter() - t0, smoothing=False)
                nxt = self.iter + 1
                last = nxt == self.max_iter
                if self.checkpoint_period > 0 and nxt % self.checkpoint_period == 0 and not last:
                    self.checkpointer.save(f"model_{self.iter:07d}", iteration=self.iter)
                if last:
                    self.checkpointer.save("model_final", iteration=self.iter)
                if (self.eval_period > 0 and nxt % self.eval_period == 0) or (last and self.eval_period >= 0):
                    if len(cfg.DATASETS.TEST):
                        self._do_eval(storage)
                if nxt % self.log_period == 0 or last or nxt - self.start_iter == 1:
                    for w in writers:
                        w.write(storage)
        finally:
            for w in writers:
                if hasattr(w, "close"):
                    w.close()
        total = time.perf_counter() - t_start
        done = max(self.max_iter - self.start_iter, 0)
        logger.info("Total training time: %.1f s (%d iterations, %.3f s / it)", total, done, total / max(done, 1))
        comm.synchronize()
        return self.last_eval_results


def ensure_synthetic_eval_data(out_dir: str) -> str:
    """Write (once) the eval files of the synthetic body mesh into out_dir (rank 0; others wait)."""
    from ..evaluation.eval_data import EVAL_DATA_FILES
    from ..evaluation.synthetic_mesh import make_synthetic_mesh, write_eval_data

    if comm.is_main_process() and not all(os.path.isfile(os.path.join(out_dir, f)) for f in EVAL_DATA_FILES):
        tmp = out_dir + f".tmp{os.getpid()}"
        write_eval_data(make_synthetic_mesh(), tmp)
        os.makedirs(out_dir, exist_ok=True)
        for f in EVAL_DATA_FILES:
            os.replace(os.path.join(tmp, f), os.path.join(out_dir, f))
        os.rmdir(tmp) if not os.listdir(tmp) else None
    comm.synchronize()
    return out_dir
