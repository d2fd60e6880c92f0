"""Checkpoints: fvcore's Checkpointer with atomic writes (a crash never leaves a half-written file)."""
import os
from typing import Any, Dict

import torch
from fvcore.common.checkpoint import Checkpointer


class DensePoseCheckpointer(Checkpointer):
    """`save(name, **extra)` writes `<save_dir>/<name>.pth` atomically and records it in
    `last_checkpoint`; `load(path)` / `resume_or_load(path, resume=...)` as in detectron2."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        tmp = save_file + ".tmp"
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, save_file)  # atomic on POSIX: readers see the old or the new file, never a torn one
        self.logger.info("Saved checkpoint to %s", save_file)
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(last_filename_basename)
        os.replace(tmp, path)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"Checkpoint not found: {filename}")
        # our own checkpoints hold tensors, numbers and strings only
        data = torch.load(filename, map_location=torch.device("cpu"), weights_only=False)
        if not isinstance(data, dict):
            raise ValueError(f"{filename}: not a checkpoint (expected a dict, got {type(data).__name__})")
        if "model" not in data:
            data = {"model": data}
        return data
