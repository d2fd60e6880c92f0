"""Checkpoints: saving/resuming, loading the authors' detectron2 checkpoints, ImageNet backbone weights."""
from .backbone import load_timm_backbone_weights
from .checkpointer import DensePoseCheckpointer, atomic_torch_save, load_checkpoint
from .formats import CheckpointLoadError, load_checkpoint_file, normalize_state_dict, read_pickle, trust_checkpoints
from .matching import CheckpointMismatchError, LoadReport, load_model_state, match_state_dict
from .reference import authors_b_config

__all__ = [
    "CheckpointLoadError", "CheckpointMismatchError", "DensePoseCheckpointer", "LoadReport", "atomic_torch_save",
    "authors_b_config", "load_checkpoint", "load_checkpoint_file", "load_model_state", "load_timm_backbone_weights",
    "match_state_dict", "normalize_state_dict", "read_pickle", "trust_checkpoints",
]
