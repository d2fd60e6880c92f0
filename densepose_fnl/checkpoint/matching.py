"""Putting a checkpoint's state dict into a model: strict by default, with a report of every entry.

fvcore's Checkpointer only *warns* about missing / unexpected / wrongly shaped entries and leaves the
missing ones at their random init: a model that silently runs half-initialised. Here a mismatch is an
error (`CheckpointMismatchError`) that lists every missing, unexpected and wrongly shaped entry with
shapes. `strict=False` is the explicit escape hatch for fine-tuning (e.g. from a backbone-only
checkpoint): whatever matches is loaded and the log names exactly what stayed at init.

Entries that are not weights and are rebuilt from the config are accepted and checked, not loaded:
`pixel_mean` / `pixel_std` (persistent buffers in old detectron2 models) and
`proposal_generator.anchor_generator.cell_anchors.*` (ditto). If their values differ from what the
config produces, the outputs would differ from the authors' -> error in strict mode.
`num_batches_tracked` missing from a checkpoint (detectron2's FrozenBatchNorm2d has none) is filled
with 0: it has no effect on inference and FrozenBN never updates it.
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

Shape = Tuple[int, ...]

_CELL_ANCHORS = re.compile(r"^(?P<prefix>.*anchor_generator)\.cell_anchors\.(?P<i>\d+)$")
_CONFIG_DERIVED = ("pixel_mean", "pixel_std")


@dataclass
class LoadReport:
    """What happened to each entry when a state dict was put into a model."""

    source: str = ""
    loaded: List[str] = field(default_factory=list)
    missing: List[Tuple[str, Shape]] = field(default_factory=list)  # model entries absent from the checkpoint
    unexpected: List[Tuple[str, Shape]] = field(default_factory=list)  # checkpoint entries the model lacks
    shape_mismatch: List[Tuple[str, Shape, Shape]] = field(default_factory=list)  # (name, ckpt, model)
    dtype_mismatch: List[Tuple[str, str, str]] = field(default_factory=list)  # integer vs floating (ckpt, model)
    config_mismatch: List[str] = field(default_factory=list)  # config-derived entries whose values differ
    filled: List[str] = field(default_factory=list)  # num_batches_tracked synthesised
    ignored: List[str] = field(default_factory=list)  # config-derived entries (checked, not loaded)
    renamed: Dict[str, str] = field(default_factory=dict)  # checkpoint name -> model name (heuristics)
    stripped_prefix: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch or self.dtype_mismatch
                    or self.config_mismatch)

    def problems(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} model entries missing from the checkpoint (would stay at init):")
            lines += [f"  {n} {tuple(s)}" for n, s in self.missing]
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} checkpoint entries the model does not have:")
            lines += [f"  {n} {tuple(s)}" for n, s in self.unexpected]
        if self.shape_mismatch:
            lines.append(f"{len(self.shape_mismatch)} entries with the wrong shape (checkpoint vs model):")
            lines += [f"  {n}: checkpoint {tuple(c)} vs model {tuple(m)}" for n, c, m in self.shape_mismatch]
        if self.dtype_mismatch:
            lines.append(f"{len(self.dtype_mismatch)} entries with an incompatible dtype (checkpoint vs model):")
            lines += [f"  {n}: checkpoint {c} vs model {m}" for n, c, m in self.dtype_mismatch]
        if self.config_mismatch:
            lines.append("config-derived entries that differ from what the config builds:")
            lines += [f"  {m}" for m in self.config_mismatch]
        return "\n".join(lines)

    def summary(self) -> str:
        s = f"{len(self.loaded)} entries loaded"
        if self.stripped_prefix:
            s += f", prefix '{self.stripped_prefix}' removed"
        if self.renamed:
            s += f", {len(self.renamed)} matched by name suffix"
        if self.filled:
            s += f", {len(self.filled)} num_batches_tracked filled with 0"
        if self.ignored:
            s += f", {len(self.ignored)} config-derived entries checked and skipped"
        return s


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model; the message lists every offending entry with shapes."""

    def __init__(self, report: LoadReport, hint: str = ""):
        self.report = report
        where = f" from {report.source}" if report.source else ""
        msg = f"Checkpoint{where} does not match the model:\n{report.problems()}"
        if hint:
            msg += "\n" + hint
        super().__init__(msg)


def _suffix_matches(model_keys: List[str], ckpt_keys: List[str]) -> Dict[str, str]:
    """detectron2's name-matching heuristic for the keys that did not match exactly: a checkpoint key
    matches a model key it is a complete dotted suffix of; the longest such checkpoint key wins; one
    checkpoint key may serve only one model key."""
    mapping: Dict[str, str] = {}
    used: Dict[str, str] = {}
    for mk in model_keys:
        best = max((ck for ck in ckpt_keys if mk.endswith("." + ck)), key=len, default=None)
        if best is None:
            continue
        if best in used:
            raise ValueError(f"Ambiguous checkpoint entry '{best}': it matches model entries '{used[best]}' and "
                             f"'{mk}'")
        used[best] = mk
        mapping[best] = mk
    return mapping


def _expected_cell_anchors(model: nn.Module, prefix: str, index: int) -> Optional[torch.Tensor]:
    try:
        gen = model.get_submodule(prefix)
    except AttributeError:
        return None
    anchors = getattr(gen, "cell_anchors", None)
    if anchors is None or index >= len(anchors):
        return None
    return anchors[index]


def match_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor], matching_heuristics: bool = False,
                     source: str = "") -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Compare `state_dict` (tensors, names already normalised) with `model.state_dict()`.

    Returns (the entries to load, keyed by model names and with model shapes, report)."""
    report = LoadReport(source=source)
    target = model.state_dict()
    ckpt = dict(state_dict)

    # config-derived entries: check, never load
    for name in list(ckpt):
        m = _CELL_ANCHORS.match(name)
        if name in target:
            continue
        if name in _CONFIG_DERIVED:
            value = ckpt.pop(name)
            report.ignored.append(name)
            ours = dict(model.named_buffers()).get(name)
            if ours is not None and (ours.shape != value.shape or not torch.allclose(ours.float(), value.float())):
                report.config_mismatch.append(
                    f"{name}: checkpoint {value.flatten().tolist()} vs config {ours.flatten().tolist()} "
                    "(MODEL.PIXEL_MEAN / PIXEL_STD)")
        elif m:
            value = ckpt.pop(name)
            report.ignored.append(name)
            ours = _expected_cell_anchors(model, m.group("prefix"), int(m.group("i")))
            if ours is not None and (ours.shape != value.shape or not torch.allclose(ours, value.float(), atol=1e-4)):
                report.config_mismatch.append(
                    f"{name}: checkpoint anchors {tuple(value.shape)} differ from MODEL.ANCHOR_GENERATOR's "
                    f"{tuple(ours.shape)}")

    if matching_heuristics:
        unmatched_model = [k for k in target if k not in ckpt]
        unmatched_ckpt = [k for k in ckpt if k not in target]
        for ck, mk in _suffix_matches(unmatched_model, unmatched_ckpt).items():
            ckpt[mk] = ckpt.pop(ck)
            report.renamed[ck] = mk

    to_load: Dict[str, torch.Tensor] = {}
    for name, ours in target.items():
        if name not in ckpt:
            if name.endswith("num_batches_tracked"):
                to_load[name] = torch.zeros_like(ours)
                report.filled.append(name)
            else:
                report.missing.append((name, tuple(ours.shape)))
            continue
        value = ckpt[name]
        if tuple(value.shape) != tuple(ours.shape):
            report.shape_mismatch.append((name, tuple(value.shape), tuple(ours.shape)))
            continue
        if value.is_floating_point() != ours.is_floating_point():
            report.dtype_mismatch.append((name, str(value.dtype), str(ours.dtype)))
            continue
        to_load[name] = value.to(dtype=ours.dtype)
        report.loaded.append(name)
    report.unexpected = [(n, tuple(v.shape)) for n, v in ckpt.items() if n not in target]
    return to_load, report


def load_model_state(model: nn.Module, state_dict: Dict[str, torch.Tensor], strict: bool = True,
                     matching_heuristics: bool = False, source: str = "", stripped_prefix: str = "") -> LoadReport:
    """Load `state_dict` into `model`.

    strict=True (default): any missing / unexpected / wrongly shaped entry raises CheckpointMismatchError
    and the model is left untouched. strict=False: load what matches, log (WARNING) every entry that
    stayed at init and every checkpoint entry that was skipped."""
    to_load, report = match_state_dict(model, state_dict, matching_heuristics, source)
    report.stripped_prefix = stripped_prefix
    if strict and not report.ok:
        raise CheckpointMismatchError(
            report, "Pass strict=False to load what matches and keep the rest at init (e.g. fine-tuning from a "
                    "backbone-only checkpoint).")
    result = model.load_state_dict(to_load, strict=False)
    # everything in to_load has a model name and shape; anything torch still reports is a bug here
    skipped = {n for n, _ in report.missing} | {m[0] for m in report.shape_mismatch} | {m[0] for m in report.dtype_mismatch}
    leftover = [k for k in result.missing_keys if k not in skipped]
    if result.unexpected_keys or leftover:
        raise RuntimeError(f"Internal error loading {source}: unexpected {result.unexpected_keys}, missing {leftover}")
    name = source or "checkpoint"
    logger.info("Loaded %s: %s", name, report.summary())
    if not report.ok:
        logger.warning("Non-strict load of %s:\n%s", name, report.problems())
        if report.missing:
            logger.warning("%d of %d model entries stayed at their initial values.", len(report.missing),
                           len(model.state_dict()))
    return report
