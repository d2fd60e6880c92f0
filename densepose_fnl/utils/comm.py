"""Tiny torch.distributed helpers (all safe to call without a process group)."""
from typing import Dict

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def _comm_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo moves CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def synchronize() -> None:
    """Barrier across all processes (no-op when single-process)."""
    if get_world_size() > 1:
        dist.barrier()


def reduce_dict_mean(values: Dict[str, float]) -> Dict[str, float]:
    """Mean of each scalar over all processes (same keys on every rank); the input when single-process."""
    if get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast_int(value: int, src: int = 0) -> int:
    if get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.long, device=_comm_device())
    dist.broadcast(t, src=src)
    return int(t.item())
