"""Batch norms folded into the convolutions they follow, for eager CPU inference (TEST.FOLD_BATCH_NORM).

In inference a batch norm is a per-channel affine map, so conv -> BN is one conv with scaled weights and a
new bias; eager PyTorch runs them as two passes over the conv's output (SPNASNet's 63 BNs were ~9 % of B's
eager time at 512). `fold_batch_norms(module, run)` finds the pairs by running `module` once with hooks: a
BN whose every call reads the output of one and the same `nn.Conv2d` (zero padding), which no other module
reads. Hooks cannot see functional consumers (`y = bn(conv(x)) + conv_out`), so the folded module is run
once more and must give the same outputs; otherwise nothing is folded.

A folded pair computes conv(x; W * s, (b - mean) * s + beta) and the BN only its activation (timm's
BatchNormAct2d and our FrozenBatchNormAct2d) or nothing, only in eager CPU inference (`eager_cpu_inference`):
the modules in eval mode, not traced / exported / compiled, no autograd on the weights. Training, export,
quantization and the state dict see the modules as they are. The folded weights are cached and made again
when any weight or statistic changes (a loaded checkpoint). Values change by float rounding only.
"""
import contextlib
import logging
import types
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .batch_norm import FrozenBatchNorm2d, _has_activation
from .eager_threads import eager_cpu_inference
from .wrappers import Conv2d

__all__ = ["find_conv_bn_pairs", "fold_batch_norms", "folded_pairs", "folding_enabled", "folding_suspended"]

logger = logging.getLogger(__name__)
_suspended = 0  # > 0: every pair runs as two modules (code that watches the BNs' inputs or sets their stats)


@contextlib.contextmanager
def folding_suspended():
    """Within: folded pairs run as conv then BN, and `fold_batch_norms` folds nothing (BN calibration hooks
    must see the conv's own output and have their new statistics applied)."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


def folding_enabled() -> bool:
    """False within `folding_suspended`."""
    return _suspended == 0


_BN_TYPES = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _foldable_conv(m: nn.Module) -> bool:
    """torch's Conv2d computation, zero padding: nn.Conv2d itself, or our Conv2d without norm / activation."""
    if not isinstance(m, nn.Conv2d) or m.padding_mode != "zeros":
        return False
    return type(m).forward is nn.Conv2d.forward or (isinstance(m, Conv2d) and m.norm is None
                                                     and m.activation is None)


def _foldable_bn(m: nn.Module) -> bool:
    """A BN with running statistics: ours (frozen) or torch's BatchNorm2d (and subclasses, timm's BatchNormAct2d)."""
    if isinstance(m, nn.BatchNorm2d):
        return m.track_running_stats and m.running_mean is not None
    return isinstance(m, FrozenBatchNorm2d)


def find_conv_bn_pairs(module: nn.Module, run: Callable[[], object]) -> List[Tuple[nn.Conv2d, nn.Module]]:
    """(conv, bn) pairs of `module` seen in `run()`: every call of bn read the output of conv's call, no other
    module call read that output, and conv's outputs all went to bn."""
    convs = [m for m in module.modules() if _foldable_conv(m)]
    bns = [m for m in module.modules() if _foldable_bn(m)]
    # ids of conv outputs are unique while they are kept alive here (all of them, for this one run); other
    # tensors die and their ids come back, so reads are resolved to a conv output (or nothing) when they happen
    outputs: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}  # id(output) -> (conv, output)
    readers: Dict[int, int] = {}  # id(conv output) -> module calls that read it
    bn_inputs: Dict[nn.Module, List[Tuple[Optional[nn.Module], int]]] = {bn: [] for bn in bns}
    conv_calls: Dict[nn.Module, int] = {c: 0 for c in convs}
    handles = []

    def on_conv(m, args, out):
        conv_calls[m] += 1
        outputs[id(out)] = (m, out)

    def on_read(m, args):
        for a in args:
            if isinstance(a, torch.Tensor) and id(a) in outputs:
                readers[id(a)] = readers.get(id(a), 0) + 1
        if m in bn_inputs:
            a = args[0] if args else None
            source = outputs[id(a)][0] if isinstance(a, torch.Tensor) and id(a) in outputs else None
            bn_inputs[m].append((source, id(a)))

    leaves = [m for m in module.modules() if not list(m.children()) or m in bn_inputs]
    try:
        handles += [c.register_forward_hook(on_conv) for c in convs]
        handles += [m.register_forward_pre_hook(on_read) for m in leaves]
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    pairs, used = [], set()
    for bn, reads in bn_inputs.items():
        sources = {source for source, _ in reads}
        if not reads or len(sources) != 1 or None in sources:
            continue
        (conv,) = sources
        if conv in used or conv_calls[conv] != len(reads) or any(readers[i] != 1 for _, i in reads):
            continue
        used.add(conv)
        pairs.append((conv, bn))
    return pairs


class _Fold:
    """A pair's BN and its folded conv weights, cached against the versions of what they derive from."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module):
        self.bn = bn
        self.key = None
        self.weight = self.bias = None
        self.conv_ref = [conv]  # a list: not registered as a submodule

    def _sources(self) -> List[torch.Tensor]:
        conv, bn = self.conv_ref[0], self.bn
        ts = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return [t for t in ts if t is not None]

    def active(self) -> bool:
        conv, bn = self.conv_ref[0], self.bn
        params = [t for t in (conv.weight, conv.bias, bn.weight, bn.bias) if t is not None]
        return folding_enabled() and not conv.training and not bn.training and eager_cpu_inference(*params)

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        key = tuple((t.data_ptr(), t._version) for t in self._sources()) + (float(self.bn.eps),)
        if key != self.key:
            conv, bn = self.conv_ref[0], self.bn
            with torch.no_grad():  # in float64, so the folded weights are the exact products rounded once
                scale = torch.rsqrt(bn.running_var.double() + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight.double()
                mean = bn.running_mean.double()
                shift = -mean if conv.bias is None else conv.bias.double() - mean
                bias = shift * scale + (bn.bias.double() if bn.bias is not None else 0.0)
                weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
            self.weight, self.bias, self.key = weight.to(conv.weight.dtype), bias.to(conv.weight.dtype), key
        return self.weight, self.bias


def _conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    fold = self.__dict__["_bn_fold"]
    if not fold.active():
        return type(self).forward(self, x)
    weight, bias = fold.folded()
    return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _bn_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fold = self.__dict__["_bn_fold"]
    if not fold.active():
        return type(self).forward(self, x)
    return self.act(self.drop(x)) if _has_activation(self) else x


def folded_pairs(module: nn.Module) -> List[Tuple[nn.Module, nn.Module]]:
    """The (conv, bn) pairs that `fold_batch_norms` installed in `module`."""
    return [(m.__dict__["_bn_fold"].conv_ref[0], m) for m in module.modules()
            if isinstance(m, _BN_TYPES) and "_bn_fold" in m.__dict__]


def _install(pairs: List[Tuple[nn.Conv2d, nn.Module]]) -> None:
    for conv, bn in pairs:
        fold = _Fold(conv, bn)
        conv.__dict__["_bn_fold"] = bn.__dict__["_bn_fold"] = fold
        conv.forward = types.MethodType(_conv_forward, conv)
        bn.forward = types.MethodType(_bn_forward, bn)


def _uninstall(pairs: List[Tuple[nn.Conv2d, nn.Module]]) -> None:
    for conv, bn in pairs:
        for m in (conv, bn):
            m.__dict__.pop("_bn_fold", None)
            m.__dict__.pop("forward", None)


def _tensors(out) -> List[torch.Tensor]:
    """The tensors of a module's output (a tensor, or dicts / lists / tuples of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


def fold_batch_norms(module: nn.Module, run: Callable[[], object], rtol: float = 1e-3) -> int:
    """Fold the BNs of `module` that follow a conv (see the module docstring); `run()` calls `module` on an
    example in eval mode. Returns the number of folded pairs (0: none found, or the folded outputs differed
    from the plain ones by more than rtol x their largest value, logged). Idempotent."""
    if folded_pairs(module):
        return len(folded_pairs(module))
    if not folding_enabled():
        return 0
    with torch.no_grad():
        plain = run()
        pairs = find_conv_bn_pairs(module, run)
        if not pairs:
            return 0
        _install(pairs)
        want, got = _tensors(plain), _tensors(run())
    same_shapes = len(want) == len(got) and all(a.shape == b.shape for a, b in zip(want, got))
    diff = max((float((a.float() - b.float()).abs().max()) for a, b in zip(want, got) if a.numel()),
               default=0.0) if same_shapes else float("inf")
    scale = max((float(a.float().abs().max()) for a in want if a.numel()), default=0.0)
    if not diff <= rtol * max(scale, 1.0):
        _uninstall(pairs)
        logger.warning("Batch-norm folding not used: the folded %s differs from the plain one by %.3g "
                       "(a conv output read by more than its BN?)", type(module).__name__, diff)
        return 0
    return len(pairs)
