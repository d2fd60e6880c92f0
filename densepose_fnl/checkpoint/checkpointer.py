"""Checkpoints: fvcore's Checkpointer with atomic writes, safe reading of our own and detectron2-format
files (`.pth` / `.pkl`), and strict loading (a mismatch is an error listing every entry)."""
import logging
import os
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from .formats import load_checkpoint_file, normalize_state_dict
from .matching import LoadReport, load_model_state


class DensePoseCheckpointer(Checkpointer):
    """`save(name, **extra)` writes `<save_dir>/<name>.pth` atomically and records it in
    `last_checkpoint`; `load(path)` / `resume_or_load(path, resume=...)` as in detectron2.

    Loading reads our checkpoints and the authors' detectron2 checkpoints alike (`{"model": ...}` from
    torch.save, a bare state dict, detectron2 model-zoo `.pkl` with numpy arrays, a `module.` prefix
    from DistributedDataParallel), without running code from the file (see `formats.py`).

    strict (default True): missing / unexpected / wrongly shaped entries raise `CheckpointMismatchError`
    listing them with shapes, and nothing is loaded. strict=False: load what matches and log exactly
    which entries stayed at init (fine-tuning from a partial checkpoint).
    trusted: allow full unpickling of files that need it (only for files from a source you trust).
    After `load`, `last_load_report` (a `LoadReport`) says what happened to every entry.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool = True, strict: bool = True,
                 trusted: bool = False, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.trusted = trusted
        self.last_load_report: Optional[LoadReport] = None
        self.logger = logging.getLogger(__name__)

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path and not os.path.isfile(path):  # fvcore would fail with a bare AssertionError
            raise FileNotFoundError(f"Checkpoint not found: {path}")
        return super().load(path, checkpointables=checkpointables)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        atomic_torch_save(data, save_file)
        self.logger.info("Saved checkpoint to %s", save_file)
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        data = load_checkpoint_file(filename, trusted=self.trusted)
        data["__source__"] = filename
        if "__author__" in data:
            self.logger.info("Reading a checkpoint from '%s'", data["__author__"])
        return data

    def _load_model(self, checkpoint: Dict[str, Any]) -> None:
        state_dict, prefix = normalize_state_dict(checkpoint.pop("model"))
        self.last_load_report = load_model_state(
            self.model, state_dict, strict=self.strict,
            matching_heuristics=bool(checkpoint.pop("matching_heuristics", False)),
            source=str(checkpoint.get("__source__", "")), stripped_prefix=prefix)
        for key in ("__source__", "__format__"):
            checkpoint.pop(key, None)
        return None  # fvcore logs incompatible keys only when given some: our report is already logged


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to `path` through a temporary file and os.replace: readers never see a torn file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never a torn one


def load_checkpoint(model: nn.Module, path: str, strict: bool = True, trusted: bool = False) -> LoadReport:
    """Load the weights of `path` (our format or detectron2's) into `model`; returns the LoadReport."""
    checkpointer = DensePoseCheckpointer(model, strict=strict, trusted=trusted)
    checkpointer.load(path, checkpointables=[])
    assert checkpointer.last_load_report is not None
    return checkpointer.last_load_report
