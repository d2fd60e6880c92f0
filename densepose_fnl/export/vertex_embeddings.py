"""The mesh vertex embeddings of an exported CSE model, written beside its graph.

A CSE graph outputs, per person, the pixel embedding map and the coarse segmentation (`tensor_model`); the
pixel -> mesh vertex matching (`postprocess.cse.closest_vertices`, the same function as eager inference)
needs the (V, D) vertex embeddings of each mesh. They do not depend on the image: the model's embedder
(`roi_heads.embedder(mesh_name)`) is evaluated once at export time and its output is written as
`<model>.vertex_embeddings.npz` (one float32 (V, D) array per mesh name) beside `<model>.onnx` / `.ort`.
The embedder's inputs (e.g. the 27,554 x 256 SMPL feature buffer of B-CSE) do not ship.

The graph's ONNX metadata entry `densepose_fnl.vertex_embeddings` (JSON) names the file, the meshes with
their (V, D) shapes and the class -> mesh mapping (DATASETS.CLASS_TO_MESH_NAME_MAPPING):
    {"file": "model.vertex_embeddings.npz", "meshes": {"smpl_27554": [27554, 16]},
     "class_to_mesh_name": {"0": "smpl_27554"}}
A missing file or one that does not match the metadata is a one-line `VertexEmbeddingsError` naming it.
"""
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["METADATA_KEY", "VertexEmbeddingsError", "load_vertex_embeddings", "vertex_embeddings_path",
           "write_vertex_embeddings"]

METADATA_KEY = "densepose_fnl.vertex_embeddings"
SUFFIX = ".vertex_embeddings.npz"


class VertexEmbeddingsError(ValueError):
    """The vertex embeddings file of a CSE export is missing or does not match its graph (one line)."""


def vertex_embeddings_path(model_path: str) -> str:
    """`DIR/model_int8.onnx` (or `.ort`) -> `DIR/model_int8.vertex_embeddings.npz`."""
    return os.path.splitext(model_path)[0] + SUFFIX


def model_class_to_mesh_name(model: nn.Module, class_to_mesh_name: Optional[Dict] = None) -> Dict[int, str]:
    """The class -> mesh mapping to record: `class_to_mesh_name` (DATASETS.CLASS_TO_MESH_NAME_MAPPING) or, for
    an embedder of one mesh, {0: that mesh} (detectron2's default class 0)."""
    meshes = tuple(model.roi_heads.embedder.mesh_names)
    if class_to_mesh_name:
        mapping = {int(k): str(v) for k, v in class_to_mesh_name.items()}
        unknown = sorted(set(mapping.values()) - set(meshes))
        if unknown:
            raise ValueError(f"DATASETS.CLASS_TO_MESH_NAME_MAPPING names meshes {unknown} the model has no "
                             f"embedder for (it has {list(meshes)})")
        return mapping
    if len(meshes) != 1:
        raise ValueError(f"the CSE model embeds {len(meshes)} meshes {list(meshes)}: the export needs "
                         "DATASETS.CLASS_TO_MESH_NAME_MAPPING")
    return {0: meshes[0]}


def write_vertex_embeddings(model: nn.Module, model_path: str, class_to_mesh_name: Optional[Dict] = None
                            ) -> Tuple[str, Dict[str, str]]:
    """Evaluate `model.roi_heads.embedder` for each mesh of the mapping, write `vertex_embeddings_path(model_path)`;
    returns (npz path, {METADATA_KEY: JSON}) for the graph's metadata."""
    mapping = model_class_to_mesh_name(model, class_to_mesh_name)
    embedder = model.roi_heads.embedder
    arrays = {}
    with torch.no_grad():
        for mesh in sorted(set(mapping.values())):
            arrays[mesh] = embedder(mesh).detach().float().cpu().numpy()
    path = vertex_embeddings_path(model_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    meta = {"file": os.path.basename(path), "meshes": {k: list(v.shape) for k, v in arrays.items()},
            "class_to_mesh_name": {str(k): v for k, v in sorted(mapping.items())}}
    return path, {METADATA_KEY: json.dumps(meta, sort_keys=True)}


def load_vertex_embeddings(model_path: str, metadata: Dict[str, str], embed_size: Optional[int] = None
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[int, str]]:
    """({mesh name: (V, D) float32}, {class: mesh name}) of the CSE export `model_path` whose ONNX metadata
    map is `metadata`; `embed_size`: the graph's embedding channels D (checked)."""
    if METADATA_KEY not in metadata:
        raise VertexEmbeddingsError(f"{model_path}: a CSE graph without the '{METADATA_KEY}' metadata entry (export "
                                    "it with tools/export_model.py / export.export_onnx)")
    try:
        meta = json.loads(metadata[METADATA_KEY])
        name, meshes = str(meta["file"]), {str(k): tuple(v) for k, v in meta["meshes"].items()}
        mapping = {int(k): str(v) for k, v in meta["class_to_mesh_name"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise VertexEmbeddingsError(f"{model_path}: unreadable '{METADATA_KEY}' metadata ({e!r})") from e
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), name)
    if not os.path.isfile(path):
        raise VertexEmbeddingsError(f"{path}: vertex embeddings file of the CSE export {model_path} not found "
                                    "(tools/export_model.py writes it beside the graph; ship both)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise VertexEmbeddingsError(f"{path}: not a vertex embeddings .npz ({e})") from e
    out = {}
    for mesh, shape in meshes.items():
        got = arrays.get(mesh)
        if got is None or tuple(got.shape) != shape or (embed_size is not None and shape[1] != embed_size):
            found = "no such array" if got is None else f"shape {tuple(got.shape)}"
            raise VertexEmbeddingsError(f"{path}: does not match the CSE export {model_path} (mesh '{mesh}': the "
                                        f"graph expects ({shape[0]}, {embed_size or shape[1]}), the file has {found})")
        out[mesh] = torch.from_numpy(np.ascontiguousarray(got, dtype=np.float32))
    return out, mapping
