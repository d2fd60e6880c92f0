"""Official DensePose geodesic evaluation data: loading, a memory-light distance table, vertex lookup.

The three files come from the DensePose project's evaluation data (they are never downloaded here):

* ``SMPL_subdiv.mat``: ``U_subdiv``, ``V_subdiv``, ``Part_ID_subdiv`` -- chart coordinates and part (1..24)
  of every point of the subdivided SMPL mesh (29,408 points; seam vertices appear once per chart);
* ``SMPL_SUBDIV_TRANSFORM.mat``: ``index`` -- for every such point, its 1-based vertex index in the
  27,554-vertex mesh the distances are defined on;
* ``Pdist_matrix.pkl``: ``{"Pdist_matrix": array (K, 1)}`` -- geodesic distances between all vertex pairs,
  condensed: the pair of 0-based vertices a < b is entry ``b * (b - 1) / 2 + a`` (this is what the official
  ``getDistancesUV`` index arithmetic reduces to; the number of vertices cancels out).

The distance table is ~1.5 GB. It is converted ONCE, streaming, to a ``.npy`` file (float32 for a float32
source) and afterwards read entry by entry with ``os.pread``: neither the conversion nor the evaluation ever
holds the table (or a memory map of it) in RAM.
"""
import codecs
import hashlib
import io
import json
import logging
import os
import pickle
import pickletools
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from scipy.io import loadmat
from scipy.spatial.distance import cdist

logger = logging.getLogger(__name__)

SMPL_SUBDIV_FILE = "SMPL_subdiv.mat"
SUBDIV_TRANSFORM_FILE = "SMPL_SUBDIV_TRANSFORM.mat"
PDIST_FILE = "Pdist_matrix.pkl"
EVAL_DATA_FILES = (SMPL_SUBDIV_FILE, SUBDIV_TRANSFORM_FILE, PDIST_FILE)
ENV_EVAL_DATA = "DENSEPOSE_EVAL_DATA"
ENV_CACHE_DIR = "DENSEPOSE_FNL_CACHE"
DEFAULT_EVAL_DATA_DIR = os.path.join(".", "datasets", "densepose_eval_data")

# Official normalisers: mean geodesic distance per coarse part, and the coarse part of each fine part I.
MEAN_DISTANCES = np.array([0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150])
COARSE_PARTS = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8])
NUM_PARTS = 24


class EvalDataMissingError(FileNotFoundError):
    """Raised when official DensePose evaluation files are absent; names every missing file."""


def resolve_eval_data_dir(value: Union[None, str, os.PathLike, "object"] = None) -> Path:
    """Directory of the official eval files: explicit value (or cfg.DENSEPOSE_EVALUATION.EVAL_DATA_DIR),
    else $DENSEPOSE_EVAL_DATA, else ./datasets/densepose_eval_data."""
    if value is not None and hasattr(value, "DENSEPOSE_EVALUATION"):
        value = value.DENSEPOSE_EVALUATION.EVAL_DATA_DIR
    if value:
        return Path(value).expanduser()
    env = os.environ.get(ENV_EVAL_DATA, "")
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_EVAL_DATA_DIR)


def check_eval_data(eval_data_dir: Union[str, os.PathLike]) -> Path:
    """Raise EvalDataMissingError naming each missing official file; return the directory."""
    d = Path(eval_data_dir)
    missing = [name for name in EVAL_DATA_FILES if not (d / name).is_file()]
    if missing:
        lines = "\n".join(f"  - {d / name}" for name in missing)
        raise EvalDataMissingError(
            f"DensePose evaluation data missing in '{d}' ({len(missing)} of {len(EVAL_DATA_FILES)} files):\n"
            f"{lines}\n"
            "These are the official geodesic evaluation files of the DensePose project's eval data "
            "(SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl; published by the DensePose "
            "project under https://dl.fbaipublicfiles.com/densepose/data/ and fetched by its "
            "DensePoseData/get_eval_data.sh). They are not downloaded automatically: copy them into that "
            f"directory, or point DENSEPOSE_EVALUATION.EVAL_DATA_DIR or ${ENV_EVAL_DATA} at a directory "
            "holding them."
        )
    return d


# ----------------------------------------------------------------------------- pickle -> .npy (streaming)
_BIG_PAYLOAD = 1 << 20  # payloads larger than this are not read into memory while scanning
_STRING_OPS = {
    "BINSTRING": ("<i", False),
    "BINBYTES": ("<I", False),
    "BINUNICODE": ("<I", True),
    "BINBYTES8": ("<Q", False),
    "BINUNICODE8": ("<Q", True),
    "BYTEARRAY8": ("<Q", False),
}


class _ArrayStub:
    """Stands in for an ndarray while unpickling a skeleton: records shape, dtype and order only."""

    def __init__(self, *args):
        self.shape = None
        self.dtype = None
        self.fortran = False
        self.data = None  # small payloads stay inline in the skeleton

    def __setstate__(self, state):
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, data = state
        self.shape, self.dtype, self.fortran = tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran)
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.data = bytes(data) if data is not None and len(data) else None


def _stub_reconstruct(*args):
    return _ArrayStub()


def _stub_frombuffer(buf, dtype, shape, order):  # numpy's protocol-5 path (``numpy...._frombuffer``)
    stub = _ArrayStub()
    stub.shape, stub.dtype, stub.fortran = tuple(int(s) for s in shape), np.dtype(dtype), order == "F"
    return stub


class _SkeletonUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "_reconstruct" and module.endswith("multiarray"):
            return _stub_reconstruct
        if name == "_frombuffer" and module.startswith("numpy"):
            return _stub_frombuffer
        if module.startswith("numpy") or module in ("_codecs", "copy_reg", "copyreg", "__builtin__", "builtins"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the distance pickle")


def _scan_pickle(path: Path) -> Tuple[bytes, List[Tuple[int, int, bool]]]:
    """Copy the pickle's opcodes, replacing big string payloads by empty ones.
    Returns the skeleton and the (offset, length, is_utf8) of each big payload in the file."""
    skeleton = io.BytesIO()
    payloads = []
    with open(path, "rb") as f:
        while True:
            code = f.read(1)
            if not code:
                raise pickle.UnpicklingError("pickle ended without STOP")
            op = pickletools.code2op.get(code.decode("latin-1"))
            if op is None:
                raise pickle.UnpicklingError(f"unknown pickle opcode {code!r} at {f.tell() - 1}")
            skeleton.write(code)
            if op.name in _STRING_OPS:
                fmt, utf8 = _STRING_OPS[op.name]
                size = np.dtype(fmt).itemsize
                (length,) = np.frombuffer(f.read(size), dtype=fmt)
                length = int(length)
                if length > _BIG_PAYLOAD:
                    payloads.append((f.tell(), length, utf8))
                    f.seek(length, os.SEEK_CUR)
                    skeleton.write(np.array(0, dtype=fmt).tobytes())
                else:
                    skeleton.write(np.array(length, dtype=fmt).tobytes())
                    skeleton.write(f.read(length))
            elif op.arg is not None:
                start = f.tell()
                op.arg.reader(f)
                end = f.tell()
                f.seek(start)
                skeleton.write(f.read(end - start))
            if op.name == "STOP":
                break
    return skeleton.getvalue(), payloads


def _iter_payload(path: Path, offset: int, length: int, utf8: bool, chunk: int = 1 << 24):
    """Yield the raw bytes of a payload; utf-8 text payloads (Python 3 protocol-2 bytes) map back to latin-1."""
    decoder = codecs.getincrementaldecoder("utf-8")() if utf8 else None
    with open(path, "rb") as f:
        f.seek(offset)
        remaining = length
        while remaining > 0:
            data = f.read(min(chunk, remaining))
            if not data:
                raise EOFError(f"{path} is truncated")
            remaining -= len(data)
            if decoder is not None:
                data = decoder.decode(data, final=remaining == 0).encode("latin-1")
            yield data


def convert_array_pickle(
    src: Union[str, os.PathLike], dst: Union[str, os.PathLike], key: Optional[str] = None, flatten: bool = False
) -> Path:
    """Convert a pickled numpy array (the top-level object, or ``obj[key]`` of a pickled dict; Python 2 or 3,
    any binary protocol) into a ``.npy`` at dst, streaming in chunks: the array is never in memory.
    float32 (or narrower) sources become float32; float64 stays float64 (exact). ``flatten``: write 1-D."""
    src, dst = Path(src), Path(dst)
    skeleton, payloads = _scan_pickle(src)
    obj = _SkeletonUnpickler(io.BytesIO(skeleton), encoding="latin1").load()
    what = "array" if key is None else f"'{key}'"
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"{src}: expected a pickled dict with key '{key}'")
        obj = obj[key]
    if not isinstance(obj, _ArrayStub) or obj.shape is None:
        raise ValueError(f"{src}: {what} is not a numpy array")
    stub = obj
    if len(payloads) > 1 or (not payloads and stub.data is None):
        raise ValueError(f"{src}: expected one data block, found {len(payloads)}")
    if stub.fortran and len(stub.shape) > 1:
        raise ValueError(f"{src}: Fortran-ordered arrays are not supported")
    count = int(np.prod(stub.shape))
    shape = (count,) if flatten else stub.shape
    src_dtype = stub.dtype
    out_dtype = np.dtype("<f8") if src_dtype.kind == "f" and src_dtype.itemsize > 4 else np.dtype("<f4")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    chunks = _iter_payload(src, *payloads[0]) if payloads else iter([stub.data])
    written = 0
    pending = b""
    try:
        with open(tmp, "wb") as out:
            np.lib.format.write_array_header_2_0(
                out, {"descr": np.lib.format.dtype_to_descr(out_dtype), "fortran_order": False, "shape": shape}
            )
            for data in chunks:
                if pending:
                    data = pending + data
                usable = len(data) - len(data) % src_dtype.itemsize
                pending = data[usable:]
                values = np.frombuffer(data[:usable], dtype=src_dtype).astype(out_dtype, copy=False)
                out.write(values.tobytes())
                written += values.size
        if pending or written != count:
            raise ValueError(f"{src}: data block holds {written} values (+{len(pending)} bytes), expected {count}")
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def convert_pdist_pickle(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], key: str = "Pdist_matrix") -> Path:
    """Convert ``{key: array (K, 1)}`` pickled (Python 2 or 3, any binary protocol) into a 1-D ``.npy`` at dst,
    streaming in chunks. float32 (or narrower) sources become float32; float64 stays float64 (exact)."""
    skeleton, _ = _scan_pickle(Path(src))
    obj = _SkeletonUnpickler(io.BytesIO(skeleton), encoding="latin1").load()
    stub = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(stub, _ArrayStub) and stub.shape is not None and any(s != 1 for s in stub.shape[1:]):
        raise ValueError(f"{src}: expected shape (K, 1), got {stub.shape}")
    return convert_array_pickle(src, dst, key=key, flatten=True)


def _default_cache_root() -> Path:
    env = os.environ.get(ENV_CACHE_DIR, "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "densepose_fnl"


def pdist_cache_path(pdist_pkl: Union[str, os.PathLike], cache_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Beside the pickle when that directory is writable (and no cache_dir is given), else in the cache dir."""
    src = Path(pdist_pkl).resolve()
    name = src.stem + ".npy"
    if cache_dir is None and os.access(src.parent, os.W_OK):
        return src.parent / name
    root = Path(cache_dir) if cache_dir is not None else _default_cache_root()
    tag = hashlib.sha1(str(src).encode()).hexdigest()[:12]
    return root / f"{src.stem}_{tag}.npy"


def ensure_npy_cache(
    pkl: Union[str, os.PathLike],
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    convert: Callable[[Path, Path], Path] = convert_pdist_pickle,
) -> Path:
    """Return the .npy cache of a pickled array, converting it once with ``convert`` (rebuilt if the pickle
    changes; see pdist_cache_path for where it lives)."""
    src = Path(pkl)
    dst = pdist_cache_path(src, cache_dir)
    meta_path = dst.with_name(dst.name + ".json")
    st = src.stat()
    meta = {"source": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if dst.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return dst
        except ValueError:
            pass
    logger.info("Converting %s to %s (one-off, streaming) ...", src, dst)
    convert(src, dst)
    meta_path.write_text(json.dumps(meta))
    return dst


def ensure_pdist_cache(pdist_pkl: Union[str, os.PathLike], cache_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Return the .npy cache for the Pdist pickle, converting it once (rebuilt if the pickle changes)."""
    return ensure_npy_cache(pdist_pkl, cache_dir, convert_pdist_pickle)


def read_npy_header(path: Union[str, os.PathLike]) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-ordered .npy file, read from its header only."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran and len(shape) > 1:
            raise ValueError(f"{path}: Fortran-ordered tables are not supported")
        return tuple(int(s) for s in shape), np.dtype(dtype), f.tell()


def pread_entries(fd: int, offset: int, dtype: np.dtype, flat_index: np.ndarray) -> np.ndarray:
    """Entries ``flat_index`` (any shape) of a C-ordered table whose data starts at ``offset`` in file fd,
    read one by one with os.pread (the table is never mapped or read whole)."""
    index = np.asarray(flat_index, dtype=np.int64)
    out = np.empty(index.shape, dtype=dtype)
    if index.size == 0:
        return out
    item = dtype.itemsize
    uniq, inverse = np.unique(index.reshape(-1), return_inverse=True)
    vals = np.empty(uniq.shape, dtype=dtype)
    raw = vals.view(np.uint8).reshape(-1, item)
    for n, k in enumerate(uniq.tolist()):
        raw[n] = np.frombuffer(os.pread(fd, item, offset + k * item), dtype=np.uint8)
    out.reshape(-1)[:] = vals[inverse.reshape(-1)]
    return out


class CondensedDistances:
    """Read-only condensed geodesic distance table in a .npy file; entries are read with os.pread."""

    def __init__(self, npy_path: Union[str, os.PathLike]):
        self.path = Path(npy_path)
        shape, self.dtype, self.offset = read_npy_header(self.path)
        if len(shape) != 1:
            raise ValueError(f"{self.path}: expected a 1-D table, got shape {shape}")
        self.size = int(shape[0])
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise IndexError(f"distance index out of range [0, {self.size})")
        return pread_entries(self._fd, self.offset, self.dtype, index)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])


def condensed_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Position of the pair of 0-based vertices (a, b), a != b, in the official condensed table.
    Equals the official ``getDistancesUV`` arithmetic for any mesh size: max*(max-1)/2 + min."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return hi * (hi - 1) // 2 + lo


class GeodesicEvalData:
    """The official eval data, loaded from ``eval_data_dir`` (see module docstring)."""

    def __init__(self, eval_data_dir: Union[str, os.PathLike], cache_dir: Optional[Union[str, os.PathLike]] = None):
        d = check_eval_data(eval_data_dir)
        self.eval_data_dir = d
        smpl = loadmat(str(d / SMPL_SUBDIV_FILE))
        self.pdist_transform = np.asarray(loadmat(str(d / SUBDIV_TRANSFORM_FILE))["index"]).squeeze()
        uv = np.array([smpl["U_subdiv"], smpl["V_subdiv"]]).squeeze()
        self.part_ids = np.array(smpl["Part_ID_subdiv"].squeeze())
        vert_inds = np.arange(uv.shape[1]) + 1
        self.part_uvs: List[np.ndarray] = []
        self.part_vert_inds: List[np.ndarray] = []
        for i in range(NUM_PARTS):
            sel = self.part_ids == (i + 1)
            self.part_uvs.append(np.ascontiguousarray(uv[:, sel].T))  # (n_i, 2)
            self.part_vert_inds.append(vert_inds[sel])
        self.distances = CondensedDistances(ensure_pdist_cache(d / PDIST_FILE, cache_dir))

    def closest_vertices(self, i_points, u_points, v_points) -> Tuple[np.ndarray, np.ndarray]:
        """Official findAllClosestVerts: per part, the subdivided-mesh point nearest in (U, V).
        Returns (1-based subdiv index or -1, 1-based distance-mesh vertex or 0)."""
        i_points = np.asarray(i_points)
        u_points, v_points = np.asarray(u_points), np.asarray(v_points)
        closest = np.ones(i_points.shape) * -1
        for i in range(NUM_PARTS):
            sel = i_points == (i + 1)
            if not sel.any():
                continue
            query = np.stack([u_points[sel], v_points[sel]], axis=1)
            dist = cdist(self.part_uvs[i], query)
            closest[sel] = self.part_vert_inds[i][np.argmin(dist, axis=0)]
        transformed = self.pdist_transform[closest.astype(int) - 1]
        transformed[closest < 0] = 0
        return closest, transformed

    def geodesic_distances(self, verts_gt: np.ndarray, verts_dt: np.ndarray) -> np.ndarray:
        """Official getDistancesUV: one entry per GT point with a vertex (> 0): 0 for the same vertex, inf
        when the prediction has none, else the table entry. The array dtype follows the official list ->
        array conversion (float32 only when every entry came from a float32 table)."""
        verts_gt, verts_dt = np.asarray(verts_gt), np.asarray(verts_dt)
        keep = verts_gt > 0
        g = verts_gt[keep].astype(np.int64) - 1
        p = verts_dt[keep].astype(np.int64)
        valid = p > 0
        same = valid & (p - 1 == g)
        lookup = valid & ~same
        values = np.zeros(g.shape, dtype=np.float64)
        values[~valid] = np.inf
        if lookup.any():
            table = self.distances[condensed_index(g[lookup], p[lookup] - 1)]
            values[lookup] = table
            if not (~valid).any() and not same.any() and self.distances.dtype == np.float32:
                return table.reshape(-1)
        return values

    def part_normalisers(self, closest_gt: np.ndarray) -> np.ndarray:
        """Mean geodesic distance of the coarse part of each GT point (official Current_Mean_Distances)."""
        sel = closest_gt[closest_gt > 0].astype(int) - 1
        return MEAN_DISTANCES[COARSE_PARTS[self.part_ids[sel]]]
