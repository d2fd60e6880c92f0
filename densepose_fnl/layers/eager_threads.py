"""A thread pool for the eager CPU kernels that torchvision runs on one thread (RoIAlign, NMS).

torchvision's CPU RoIAlign and NMS use one thread whatever `torch.get_num_threads()` says. Where one call
splits into independent pieces (RoIs; NMS groups that never suppress each other), the pieces run here at
the same time: the kernels release the GIL, and each piece is computed exactly as in the single call.
Only in eager inference without autograd: with a backward pass the parts' gradients would be summed in
another order (training stays bit for bit what it was), and traced, exported and compiled graphs keep the
one op (ONNX Runtime parallelises its own kernels)."""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence

import torch

_pool: Optional[ThreadPoolExecutor] = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:  # threads start lazily, as work is submitted: one per CPU is only an upper bound
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="eager_cpu")
    return _pool


def eager_cpu_inference(*tensors: torch.Tensor) -> bool:
    """Whether a kernel on `tensors` runs in eager CPU inference: not traced / exporting / compiling, no
    autograd on any input, every input on the CPU."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def eager_cpu_threads(*tensors: torch.Tensor) -> int:
    """How many threads may share a kernel's work on `tensors`: torch's intra-op thread count in eager CPU
    inference (`eager_cpu_inference`), else 1."""
    return max(torch.get_num_threads(), 1) if eager_cpu_inference(*tensors) else 1


def run_in_parallel(fn: Callable, args: Sequence[tuple]) -> List:
    """[fn(*a) for a in args], the first on the calling thread and the others on the pool at the same time."""
    futures = [_executor().submit(fn, *a) for a in args[1:]]
    return [fn(*args[0])] + [f.result() for f in futures]
