"""Reading checkpoint files safely: our own `.pth`, detectron2 `.pth` (torch.save of {"model": ...}),
bare state dicts, and detectron2 model-zoo `.pkl` files (pickle of {"model": {name: numpy array}, ...}).

Why not plain `torch.load(weights_only=False)` / `pickle.load`: unpickling runs arbitrary code named
in the file. We only ever need tensors, numpy arrays, numbers, strings and containers, so:

* `.pth` files go through `torch.load(weights_only=True)`. torch's safe unpickler refuses numpy
  objects ("Unsupported global: numpy.core.multiarray._reconstruct"), which detectron2 checkpoints
  can contain (e.g. numpy arrays in the "model" dict after a conversion script). We allow exactly the
  numpy globals needed to rebuild arrays (`_reconstruct`, `ndarray`, `dtype` and its per-type
  classes, `scalar`) and nothing else.
* `.pkl` files are read with a restricted `pickle.Unpickler` that resolves the same short list of
  globals (plus `collections.OrderedDict`) and refuses any other.

A file that needs anything else (a pickled config object, a custom class, ...) fails with a
`CheckpointLoadError` naming the refused global. If you trust where the file came from, pass
`trusted=True` (the tools: `--trust-checkpoint`, which calls `trust_checkpoints()`), or use
`tools/convert_checkpoint.py --trust` once to rewrite it as a tensors-only file. A safety switch is a
command-line flag, never an environment variable: it must not stay on, unseen, for later commands.
"""
import codecs
import collections
import importlib
import io
import logging
import os
import pickle
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

TRUST_FLAG = "--trust-checkpoint"
_trust_all = False  # set by the tools' --trust-checkpoint, for this process only

# keys that hold weights in the containers people save
_STATE_DICT_KEYS = ("model", "state_dict", "model_state", "model_state_dict")


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (missing, not a checkpoint, or needs unsafe unpickling)."""


def _numpy_allowlist() -> Dict[str, Any]:
    """"module.name" -> object for the numpy globals a pickled ndarray refers to. Files written by numpy 1.x
    name `numpy.core.multiarray.*`, numpy 2.x `numpy._core.multiarray.*`: both map to what we have."""
    mod = None
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = importlib.import_module(mod_name)
            break
        except ImportError:
            continue
    allowed: Dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for attr in ("_reconstruct", "scalar"):
        for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
            allowed[f"{mod_name}.{attr}"] = getattr(mod, attr)
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                allowed[f"numpy.dtypes.{name}"] = getattr(dtypes, name)
    return allowed


_NUMPY_ALLOWED = _numpy_allowlist()
# protocol-2 pickles (Python 2 era model-zoo files) spell bytes as _codecs.encode(text, "latin1")
_ALLOWED_PKL = dict(_NUMPY_ALLOWED, **{"collections.OrderedDict": collections.OrderedDict,
                                       "_codecs.encode": codecs.encode})


def _torch_safe_globals() -> List[Any]:
    # (object, "module.name") pairs: torch matches the name written in the file
    return [(obj, name) for name, obj in _NUMPY_ALLOWED.items()]


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED_PKL.get(f"{module}.{name}")
        if obj is not None:
            return obj
        raise pickle.UnpicklingError(f"refused global '{module}.{name}' (not needed for weights)")


def trust_checkpoints(enabled: bool = True) -> None:
    """Let every checkpoint this process loads run pickled code (the tools' --trust-checkpoint flag)."""
    global _trust_all
    _trust_all = bool(enabled)


def _trusted(trusted: bool) -> bool:
    return trusted or _trust_all


def _corrupt(path: str, e: BaseException) -> CheckpointLoadError:
    lines = str(e).strip().splitlines()
    # torch's weights-only errors open with a paragraph of advice; the cause is on its "...error:" line
    detail = [d for d in (line.split("error:", 1)[1].strip() for line in lines if "Unpickler error:" in line) if d]
    # and any other line giving advice about trusting the source is not the cause of a broken file
    detail = detail or [line for line in lines if line.strip() and "trust" not in line.lower()][:1]
    return CheckpointLoadError(f"{path}: not a valid checkpoint (truncated or corrupt: "
                               f"{type(e).__name__}{': ' + detail[0] if detail else ''})")


def _load_pkl(path: str, trusted: bool) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "refused global" not in str(e):  # not a pickle that needs code: a broken file
            raise _corrupt(path, e) from e
        if _trusted(trusted):
            logger.warning("%s: %s; loading with full pickle because the file is trusted", path, e)
            return pickle.loads(data, encoding="latin1")
        raise CheckpointLoadError(
            f"{path}: safe unpickling failed: {e}. The file holds objects other than arrays/numbers/strings. "
            f"If you trust its source, load it with trusted=True (the tools: {TRUST_FLAG}), or rewrite it once with "
            "`tools/convert_checkpoint.py --trust`."
        ) from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as e:
        raise _corrupt(path, e) from e


def read_pickle(path: str, trusted: bool = False) -> Any:
    """Any pickle of arrays / numbers / strings / containers (e.g. CSE vertex features), read with the same
    restricted unpickler as `.pkl` checkpoints. FileNotFoundError naming the file if it is not there."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    return _load_pkl(path, trusted)


def _load_torch(path: str, trusted: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_torch_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = next((line for line in first if "Unsupported global" in line), "")
        if not reason:  # weights-only unpickling failed for another reason than a global: a broken file
            if "invalid load key" in str(e):  # maybe a plain pickle saved with another extension
                return _load_pkl(path, trusted)
            raise _corrupt(path, e) from e
        if _trusted(trusted):
            logger.warning("%s: weights-only load failed (%s); loading with full pickle because the file is "
                           "trusted", path, first[0])
            return torch.load(path, map_location="cpu", weights_only=False)
        raise CheckpointLoadError(
            f"{path}: torch.load(weights_only=True) refused the file ({reason.strip()}). It holds objects "
            "other than tensors, numpy arrays, numbers and strings (e.g. a pickled config or optimizer "
            f"class). If you trust its source, load it with trusted=True (the tools: {TRUST_FLAG}), or rewrite it "
            "once with `tools/convert_checkpoint.py --trust IN --out OUT`."
        ) from e
    except RuntimeError as e:
        if "zip archive" in str(e) or "magic number" in str(e) or "invalid load key" in str(e):
            # not a torch file: maybe a pickle saved with another extension
            return _load_pkl(path, trusted)
        raise _corrupt(path, e) from e
    except (OSError, EOFError, ValueError) as e:  # a torn zip archive (e.g. an interrupted copy)
        if isinstance(e, FileNotFoundError):
            raise
        raise _corrupt(path, e) from e


def load_checkpoint_file(path: str, trusted: bool = False) -> Dict[str, Any]:
    """Read `path` into {"model": state_dict, **other entries}.

    Accepted: a dict with a "model" (or "state_dict" / "model_state") entry holding the state dict, as
    detectron2 / fvcore / our trainer write it; a bare state dict; detectron2 model-zoo `.pkl` (numpy
    values). Values are returned as they are in the file (numpy arrays included): see
    `normalize_state_dict`. The returned dict has "__format__" set to "pkl" or "torch".
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.endswith(".pkl"):
        data, fmt = _load_pkl(path, trusted), "pkl"
    else:
        data, fmt = _load_torch(path, trusted), "torch"
    if not isinstance(data, dict):
        raise CheckpointLoadError(f"{path}: not a checkpoint (expected a dict, got {type(data).__name__})")
    if fmt == "pkl" and "blobs" in data and "model" not in data:
        raise CheckpointLoadError(
            f"{path}: a Caffe2 / Detectron1 model (has 'blobs'); its names need detectron2's C2 renaming, "
            "which is not supported. Use a detectron2-format checkpoint ({'model': ..., '__author__': ...}).")
    for key in _STATE_DICT_KEYS:
        if key in data and isinstance(data[key], dict):
            out = dict(data)
            if key != "model":
                out["model"] = out.pop(key)
            break
    else:
        tensors = [v for v in data.values() if isinstance(v, (torch.Tensor, np.ndarray))]
        if not tensors:
            raise CheckpointLoadError(
                f"{path}: no state dict found (no 'model' entry and no tensors at the top level; keys: "
                f"{sorted(map(str, data))[:10]})")
        out = {"model": data}
    out["__format__"] = fmt
    return out


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        # a C-contiguous copy keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
        return torch.from_numpy(np.array(value, copy=True, order="C"))
    raise CheckpointLoadError(f"Checkpoint entry '{name}' is a {type(value).__name__}, not a tensor / array")


def strip_common_prefix(names: List[str], prefixes: Tuple[str, ...] = ("module.",)) -> str:
    """The prefix (e.g. DistributedDataParallel's 'module.') carried by every name, or ''."""
    for p in prefixes:
        if names and all(n.startswith(p) for n in names):
            return p
    return ""


def normalize_state_dict(state_dict: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], str]:
    """numpy arrays -> tensors; drop a prefix every name carries ('module.' from DDP, repeatedly).

    Returns (new state dict, the prefix that was removed)."""
    removed = ""
    names = list(state_dict)
    while True:
        p = strip_common_prefix(names)
        if not p:
            break
        removed += p
        names = [n[len(p):] for n in names]
    out = {new: _to_tensor(old, state_dict[old]) for new, old in zip(names, state_dict)}
    return out, removed
