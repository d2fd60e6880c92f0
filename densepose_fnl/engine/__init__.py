"""Engine: DefaultPredictor (inference), DefaultTrainer + launcher (training, single- and multi-process)."""
from .defaults import (
    DefaultTrainer,
    QATUnavailableError,
    build_qat,
    default_argument_parser,
    default_setup,
    flatten_results,
    print_results_tables,
    seed_all_rng,
    setup_logging,
)
from .launch import find_free_port, launch
from .predictor import DefaultPredictor

__all__ = ["DefaultPredictor", "DefaultTrainer", "QATUnavailableError", "build_qat", "default_argument_parser",
           "default_setup",
           "find_free_port", "flatten_results", "launch", "print_results_tables", "seed_all_rng", "setup_logging"]
