"""Multi-process launcher (detectron2's `launch`): one process per GPU with CUDA (NCCL), or
`num_gpus_per_machine` CPU processes (gloo) without; `main_func(*args)` runs in each after
torch.distributed is initialised. Single process: `main_func` is called directly."""
import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)

__all__ = ["launch", "find_free_port"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Tuple[Any, ...] = (), timeout: timedelta = DEFAULT_TIMEOUT,
           use_cuda: bool = None) -> None:
    """Run `main_func(*args)` in num_gpus_per_machine * num_machines processes.

    dist_url: "tcp://host:port" of machine 0, or "auto" (one machine only: a free local port).
    use_cuda: default torch.cuda.is_available(); without CUDA each "GPU" is a CPU process."""
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(f"--num-gpus and --num-machines must be >= 1, got {num_gpus_per_machine}, {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank must be in [0, {num_machines}), got {machine_rank}")
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if use_cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://<machine 0>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init across machines needs a shared file system")
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, use_cuda),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int,
                        machine_rank: int, dist_url: str, args: Tuple[Any, ...], timeout: timedelta,
                        use_cuda: bool) -> None:
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if not use_cuda:
        # share the cores between the CPU processes: oversubscribed OpenMP threads spin against each other
        # (an iteration can become 20x slower)
        torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // num_gpus_per_machine)))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception as e:
        raise RuntimeError(f"Process group initialisation failed at {dist_url} (rank {global_rank}): {e}") from e
    try:
        dist.barrier()
        main_func(*args)
    finally:
        dist.destroy_process_group()
