"""Engine: command-line setup, the training loop of hooks and DefaultTrainer, the launcher, DefaultPredictor."""
from ..evaluation.testing import flatten_results, print_results_tables
from ..utils import comm
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .launch import find_free_port, launch
from .predictor import DefaultPredictor
from .setup import default_argument_parser, default_setup, seed_all_rng, setup_logging
from .train_loop import HookBase, SimpleTrainer, TrainerBase, unwrap_model
from .trainer import DefaultTrainer, QATUnavailableError, build_qat

__all__ = ["DefaultPredictor", "DefaultTrainer", "EvalHook", "HookBase", "IterationTimer", "LRScheduler",
           "PeriodicCheckpointer", "PeriodicWriter", "QATUnavailableError", "SimpleTrainer", "TrainerBase",
           "build_qat", "comm", "default_argument_parser", "default_setup", "find_free_port", "flatten_results",
           "launch", "print_results_tables", "seed_all_rng", "setup_logging", "unwrap_model"]
