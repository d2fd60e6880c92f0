"""A mesh for continuous surface embeddings (detectron2's ``Mesh`` / ``create_mesh``), its files read lazily.

``create_mesh(name)`` returns a Mesh whose attributes are read from the catalog's files
(``densepose_fnl.data.meshes``) when first accessed: ``vertices`` (V, 3) float32 and ``faces`` (F, 3) int64
from ``<name>.pkl`` (``{"vertices", "faces"}``), ``symmetry`` = ``{"vertex_transforms": (V,) int64}``,
``texcoords`` (V, 2) float32, and ``geodists``: the (V, V) geodesic table, which is NOT loaded -- for SMPL
it is 27,554^2 float32 (~3 GB). ``mesh.geodists`` is a ``GeodesicTable``: ``geodists[rows]`` reads those
rows ((len(rows), V) float32 tensor), ``geodists[rows, cols]`` the paired entries ((len,) tensor), from a
``.npy`` copy of the pickle made once, streaming, beside it (or in the cache dir), and read with
``os.pread`` exactly as the chart evaluator reads ``Pdist_matrix`` (``evaluation.eval_data``).
"""
import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from ..data.meshes.catalog import MeshCatalog, MeshInfo, mesh_file_path, resolve_mesh_data_dir

__all__ = ["GeodesicTable", "Mesh", "create_mesh", "load_mesh_symmetry"]


def _load_pickle(path: Path):
    with open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as e:  # corrupt or foreign pickles: name the file
            raise ValueError(f"{path}: cannot read mesh pickle ({type(e).__name__}: {e})") from e


class GeodesicTable:
    """Row / pair access to a (V, V) geodesic distance table stored as a C-ordered .npy file (pread)."""

    def __init__(self, npy_path: Union[str, os.PathLike]):
        from ..evaluation.eval_data import read_npy_header

        self.path = Path(npy_path)
        shape, self.dtype, self.offset = read_npy_header(self.path)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"{self.path}: expected a square (V, V) geodesic table, got shape {shape}")
        self.num_vertices = int(shape[0])
        self._fd: Optional[int] = os.open(self.path, os.O_RDONLY)

    @classmethod
    def from_pickle(cls, pkl: Union[str, os.PathLike], cache_dir: Optional[Union[str, os.PathLike]] = None):
        from ..evaluation.eval_data import convert_array_pickle, ensure_npy_cache

        return cls(ensure_npy_cache(pkl, cache_dir, convert_array_pickle))

    @property
    def shape(self):
        return (self.num_vertices, self.num_vertices)

    def __len__(self) -> int:
        return self.num_vertices

    def _check(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_vertices):
            raise IndexError(f"vertex index out of range [0, {self.num_vertices}) in {self.path}")
        return ids

    def rows(self, ids) -> torch.Tensor:
        """(len(ids), V) float32: the distances from each vertex in ids to every vertex."""
        ids = self._check(ids)
        n = self.num_vertices
        row_bytes = n * self.dtype.itemsize
        out = np.empty((len(ids), n), dtype=self.dtype)
        uniq, inverse = np.unique(ids, return_inverse=True)
        for k, r in enumerate(uniq.tolist()):
            row = np.frombuffer(os.pread(self._fd, row_bytes, self.offset + r * row_bytes), dtype=self.dtype)
            out[inverse == k] = row
        return torch.from_numpy(out.astype(np.float32, copy=False))

    def pairs(self, rows, cols) -> torch.Tensor:
        """(len,) float32: the distances between rows[k] and cols[k]."""
        from ..evaluation.eval_data import pread_entries

        rows, cols = self._check(rows), self._check(cols)
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols differ in length: {rows.shape} vs {cols.shape}")
        vals = pread_entries(self._fd, self.offset, self.dtype, rows * self.num_vertices + cols)
        return torch.from_numpy(vals.astype(np.float32, copy=False))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):
            if len(index) != 2:
                raise IndexError("geodists[rows] or geodists[rows, cols]")
            return self.pairs(*index)
        return self.rows(index)

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


class Mesh:
    """detectron2's Mesh: explicit tensors, or a ``mesh_info`` whose files are read on first access.
    ``geodists`` is a tensor when given explicitly, else a ``GeodesicTable`` (indexable the same way)."""

    def __init__(
        self,
        vertices: Optional[torch.Tensor] = None,
        faces: Optional[torch.Tensor] = None,
        geodists=None,
        symmetry: Optional[Dict[str, torch.Tensor]] = None,
        texcoords: Optional[torch.Tensor] = None,
        mesh_info: Optional[MeshInfo] = None,
        device: Optional[Union[str, torch.device]] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
    ):
        if vertices is None and mesh_info is None:
            raise ValueError("Mesh needs vertices or a mesh_info to load them from")
        self._vertices = vertices
        self._faces = faces
        self._geodists = geodists
        self._symmetry = symmetry
        self._texcoords = texcoords
        self.mesh_info = mesh_info
        self.cache_dir = cache_dir
        if device is None:
            device = vertices.device if vertices is not None else "cpu"
        self.device = torch.device(device)
        if vertices is not None and texcoords is not None and len(vertices) != len(texcoords):
            raise ValueError(f"{len(vertices)} vertices but {len(texcoords)} texcoords")

    @property
    def name(self) -> Optional[str]:
        return self.mesh_info.name if self.mesh_info is not None else None

    def _path(self, field: str) -> Optional[Path]:
        return None if self.mesh_info is None else mesh_file_path(self.mesh_info, field)

    def _load_data(self) -> None:
        path = self._path("data")
        obj = _load_pickle(path)
        if not isinstance(obj, dict) or "vertices" not in obj or "faces" not in obj:
            raise ValueError(f"{path}: expected a pickled dict with 'vertices' and 'faces'")
        v = torch.as_tensor(np.asarray(obj["vertices"]), dtype=torch.float32)
        f = torch.as_tensor(np.asarray(obj["faces"]), dtype=torch.float64).round().to(torch.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"{path}: vertices must be (V, 3) and faces (F, 3), got {tuple(v.shape)}, {tuple(f.shape)}")
        if self._vertices is None:
            self._vertices = v.to(self.device)
        if self._faces is None:
            self._faces = f.to(self.device)

    @property
    def vertices(self) -> torch.Tensor:
        if self._vertices is None:
            self._load_data()
        return self._vertices

    @property
    def faces(self) -> torch.Tensor:
        if self._faces is None and self.mesh_info is not None:
            self._load_data()
        return self._faces

    @property
    def num_vertices(self) -> int:
        if self._vertices is None and self._texcoords is None and self._geodists is not None:
            return len(self._geodists)
        return len(self.vertices)

    @property
    def geodists(self):
        if self._geodists is None and self.mesh_info is not None:
            path = self._path("geodists")
            if path is not None:
                self._geodists = GeodesicTable.from_pickle(path, self.cache_dir)
        return self._geodists

    @property
    def symmetry(self) -> Optional[Dict[str, torch.Tensor]]:
        if self._symmetry is None and self.mesh_info is not None:
            path = self._path("symmetry")
            if path is not None:
                self._symmetry = {k: t.to(self.device) for k, t in load_mesh_symmetry(str(path)).items()}
        return self._symmetry

    @property
    def texcoords(self) -> Optional[torch.Tensor]:
        if self._texcoords is None and self.mesh_info is not None:
            path = self._path("texcoords")
            if path is not None:
                t = torch.as_tensor(np.asarray(_load_pickle(path)), dtype=torch.float32)
                if t.ndim != 2 or t.shape[1] != 2:
                    raise ValueError(f"{path}: texcoords must be (V, 2), got {tuple(t.shape)}")
                self._texcoords = t.to(self.device)
        return self._texcoords

    def to(self, device) -> "Mesh":
        def move(t):
            return None if t is None or not isinstance(t, torch.Tensor) else t.to(device)

        sym = None if self._symmetry is None else {k: v.to(device) for k, v in self._symmetry.items()}
        geo = self._geodists if not isinstance(self._geodists, torch.Tensor) else self._geodists.to(device)
        return Mesh(move(self._vertices), move(self._faces), geo, sym, move(self._texcoords), self.mesh_info,
                    device, self.cache_dir)

    def __repr__(self) -> str:
        return f"Mesh(name={self.name!r}, device={self.device})"


@lru_cache()
def load_mesh_symmetry(symmetry_path: str) -> Dict[str, torch.Tensor]:
    """{"vertex_transforms": (V,) int64} from a symmetry pickle (detectron2's load_mesh_symmetry)."""
    obj = _load_pickle(Path(symmetry_path))
    if not isinstance(obj, dict) or "vertex_transforms" not in obj:
        raise ValueError(f"{symmetry_path}: expected a pickled dict with 'vertex_transforms'")
    t = torch.as_tensor(np.asarray(obj["vertex_transforms"]), dtype=torch.int64).reshape(-1)
    return {"vertex_transforms": t}


@lru_cache()
def _create_mesh(mesh_name: str, device: str, data_dir: str) -> Mesh:
    return Mesh(mesh_info=MeshCatalog[mesh_name], device=device)


def create_mesh(mesh_name: str, device: Union[str, torch.device] = "cpu") -> Mesh:
    """The catalog's mesh ``mesh_name`` (one instance per name, device and mesh data directory); its files are
    read when an attribute is first used (a missing file is an error naming it)."""
    info = MeshCatalog[mesh_name]
    return _create_mesh(mesh_name, str(torch.device(device)), str(resolve_mesh_data_dir(info.data_dir)))
