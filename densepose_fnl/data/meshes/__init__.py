"""Meshes for continuous surface embeddings: the catalog of mesh files (detectron2's builtin names)."""
from . import builtin  # noqa: F401  (registers the builtin meshes)
from .builtin import BUILTIN_MESH_NAMES
from .catalog import (
    ENV_MESH_DATA_DIR,
    MeshCatalog,
    MeshFileMissingError,
    MeshInfo,
    get_class_to_mesh_name_mapping,
    mesh_file_path,
    register_mesh,
    register_meshes,
    resolve_mesh_data_dir,
    set_mesh_data_dir,
)

__all__ = [
    "BUILTIN_MESH_NAMES",
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
