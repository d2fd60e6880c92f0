"""Mesh catalog (detectron2's ``MeshCatalog`` / ``MeshInfo``): mesh name -> its files, read locally.

File paths in a ``MeshInfo`` are relative to a mesh data directory, resolved when a file is first read
(so the config / environment may be set after import): the MeshInfo's own ``data_dir`` if set, else
``DATASETS.MESH_DATA_DIR`` (applied by ``set_mesh_data_dir(cfg)``), else ``$DENSEPOSE_MESH_DATA_DIR``, else
``<datasets root>/densepose_meshes``. Nothing is ever downloaded: a missing file is an error naming it.
"""
import logging
import os
from collections import UserDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

__all__ = [
    "ENV_MESH_DATA_DIR",
    "MeshCatalog",
    "MeshFileMissingError",
    "MeshInfo",
    "get_class_to_mesh_name_mapping",
    "mesh_file_path",
    "register_mesh",
    "register_meshes",
    "resolve_mesh_data_dir",
    "set_mesh_data_dir",
]

ENV_MESH_DATA_DIR = "DENSEPOSE_MESH_DATA_DIR"
_configured_dir: Optional[str] = None


class MeshFileMissingError(FileNotFoundError):
    """A mesh file is not on disk; the message names its full path."""


@dataclass
class MeshInfo:
    name: str
    data: str
    geodists: Optional[str] = None
    symmetry: Optional[str] = None
    texcoords: Optional[str] = None
    data_dir: Optional[str] = None  # overrides the global mesh data directory (e.g. a synthetic set's)


class _MeshCatalog(UserDict):
    """name -> MeshInfo, with stable integer ids in registration order (detectron2's)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mesh_ids = {}
        self.mesh_names = {}
        self.max_mesh_id = -1

    def __setitem__(self, key, value):
        if key in self:
            if self[key] != value:
                logging.getLogger(__name__).warning(
                    f"Overwriting mesh catalog entry '{key}': old value {self[key]}, new value {value}"
                )
            mesh_id = self.mesh_ids[key]
        else:
            self.max_mesh_id += 1
            mesh_id = self.max_mesh_id
        super().__setitem__(key, value)
        self.mesh_ids[key] = mesh_id
        self.mesh_names[mesh_id] = key

    def __getitem__(self, key):
        if key not in self.data:
            raise KeyError(f"mesh '{key}' is not registered (known: {sorted(self.data)})")
        return self.data[key]

    def get_mesh_id(self, shape_name: str) -> int:
        if shape_name not in self.mesh_ids:
            raise KeyError(f"mesh '{shape_name}' is not registered (known: {sorted(self.mesh_ids)})")
        return self.mesh_ids[shape_name]

    def get_mesh_name(self, mesh_id: int) -> str:
        return self.mesh_names[mesh_id]


MeshCatalog = _MeshCatalog()


def register_mesh(mesh_info: MeshInfo) -> None:
    MeshCatalog[mesh_info.name] = mesh_info


def register_meshes(mesh_infos: Iterable[MeshInfo]) -> None:
    for mesh_info in mesh_infos:
        register_mesh(mesh_info)


def set_mesh_data_dir(value: Union[None, str, os.PathLike, "object"]) -> None:
    """Use this directory (or a config's DATASETS.MESH_DATA_DIR; empty = back to the env / default)."""
    global _configured_dir
    if value is not None and hasattr(value, "DATASETS"):
        value = value.DATASETS.MESH_DATA_DIR
    _configured_dir = os.fspath(value) if value else None


def resolve_mesh_data_dir(value: Union[None, str, os.PathLike] = None) -> Path:
    """Explicit value, else DATASETS.MESH_DATA_DIR (set_mesh_data_dir), else $DENSEPOSE_MESH_DATA_DIR,
    else <datasets root>/densepose_meshes."""
    if value:
        return Path(value).expanduser()
    if _configured_dir:
        return Path(_configured_dir).expanduser()
    env = os.environ.get(ENV_MESH_DATA_DIR, "")
    if env:
        return Path(env).expanduser()
    from ..datasets.coco import datasets_root

    return Path(datasets_root()) / "densepose_meshes"


def mesh_file_path(mesh_info: MeshInfo, field: str) -> Optional[Path]:
    """Full path of a mesh file ('data', 'geodists', 'symmetry', 'texcoords'); None if the mesh has none.
    Raises MeshFileMissingError naming the path when it is not on disk."""
    rel = getattr(mesh_info, field)
    if rel is None:
        return None
    path = Path(rel) if os.path.isabs(rel) else resolve_mesh_data_dir(mesh_info.data_dir) / rel
    if not path.is_file():
        raise MeshFileMissingError(
            f"mesh '{mesh_info.name}': {field} file not found: {path.absolute()} (mesh files are read from "
            f"DATASETS.MESH_DATA_DIR / ${ENV_MESH_DATA_DIR} / <datasets root>/densepose_meshes; they are "
            "detectron2 DensePose's mesh files (https://dl.fbaipublicfiles.com/densepose/meshes/), never "
            "downloaded here: see datasets/README.md)"
        )
    return path


def get_class_to_mesh_name_mapping(cfg) -> Dict[int, str]:
    """DATASETS.CLASS_TO_MESH_NAME_MAPPING as {contiguous class index: mesh name} (detectron2's helper);
    every name must be a registered mesh."""
    mapping = {int(k): str(v) for k, v in cfg.DATASETS.CLASS_TO_MESH_NAME_MAPPING.items()}
    unknown = sorted({v for v in mapping.values() if v not in MeshCatalog})
    if unknown:
        raise KeyError(f"DATASETS.CLASS_TO_MESH_NAME_MAPPING names unregistered mesh(es) {unknown} "
                       f"(known: {sorted(MeshCatalog)})")
    return mapping
