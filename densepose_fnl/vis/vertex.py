"""Visualizers of CSE results (`DensePoseEmbeddingResult`: each pixel's closest mesh vertex), as detectron2's
`dp_vertex` (DensePoseOutputsVertexVisualizer) and `dp_cse_texture` (DensePoseOutputsTextureVisualizer).

* `dp_vertex`: one value in [0, 1] per vertex (`vertex_values`, detectron2's `get_xyz_vertex_embedding`),
  looked up at each pixel's vertex, scaled to 0..255 and drawn through COLORMAP_JET with alpha 0.7 on the
  body pixels (vertex >= 0). For smpl_27554 the value is the first coordinate of the multidimensional scaling
  of the mesh detectron2 ships as ``mds_d=256.npy`` (read from the mesh data directory, never downloaded);
  for other meshes the sum of the vertex coordinates, min-max normalised, squared.
* `dp_cse_texture`: a texture image per mesh (``--texture_atlases_map '{"smpl_27554": "tex.png"}'``) looked
  up at the mesh's texture coordinates (``texcoords`` file) of each pixel's vertex: texel
  ``[trunc(V * H), trunc(U * W)]`` (clipped to the image: detectron2 indexes out of range at U or V = 1),
  blended by the texture's alpha channel (or, without one, where the texel is not black). Persons of a mesh
  without a texture are left as they are (as detectron2).
"""
import io
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import cv2
import numpy as np

from .base import Visualizer, as_numpy, blend_masked, colorize, crop_to_image

logger = logging.getLogger(__name__)

SMPL_MDS_FILE = "mds_d=256.npy"


class _Region:
    """One CSE person cropped to the image (the fields `blend_masked` reads, plus the vertex map)."""

    def __init__(self, index: int, ys: slice, xs: slice, vertices: np.ndarray, mesh_name: str):
        self.index, self.ys, self.xs, self.vertices, self.mesh_name = index, ys, xs, vertices, mesh_name

    @property
    def foreground(self) -> np.ndarray:
        return self.vertices >= 0


def vertex_regions(image_shape, boxes_xyxy, results) -> Iterator[_Region]:
    boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    if len(boxes) != len(results):
        raise ValueError(f"{len(boxes)} boxes but {len(results)} DensePose results")
    for k, r in enumerate(results):
        if getattr(r, "vertices", None) is None:
            raise ValueError(f"CSE visualizers (dp_vertex, dp_cse_texture) need CSE results (mesh vertices); "
                             f"person {k} is a {type(r).__name__}")
        vertices = as_numpy(r.vertices).astype(np.int64)
        crop = crop_to_image(image_shape[0], image_shape[1], boxes[k], vertices.shape)
        if crop is None:
            continue
        (ys, xs), (sy, sx) = crop
        yield _Region(k, ys, xs, vertices[sy, sx], r.mesh_name)


def _mesh_data_dir(mesh_name: str) -> Path:
    from ..data.meshes import MeshCatalog, resolve_mesh_data_dir

    info = MeshCatalog.data.get(mesh_name)
    return resolve_mesh_data_dir(info.data_dir if info is not None else None)


def read_mds_file(path) -> np.ndarray:
    """The (V,) first MDS coordinate from detectron2's ``mds_d=256.npy`` (a pair (coordinates (V, d), _)
    saved by np.save as an object array; pickled arrays are read with the restricted unpickler)."""
    from ..checkpoint.formats import _RestrictedUnpickler

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dp_vertex: {path} not found (detectron2's SMPL vertex colouring file {path.name}, "
                                "https://dl.fbaipublicfiles.com/densepose/data/cse/, is never downloaded: put it in "
                                "the mesh data directory)")
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
        if dtype.hasobject:
            data = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
        else:
            f.seek(0)
            data = np.load(f, allow_pickle=False)
    coords = np.asarray(data[0], dtype=np.float64)
    if coords.ndim != 2:
        raise ValueError(f"{path}: expected (coordinates (V, d), ...), got coordinates of shape {coords.shape}")
    return coords[:, 0]


@lru_cache()
def _vertex_values(mesh_name: str, data_dir: str) -> np.ndarray:
    if mesh_name == "smpl_27554":
        values = read_mds_file(Path(data_dir) / SMPL_MDS_FILE)
        values = values - values.min()
        return (values / values.max()).astype(np.float32)
    from ..structures.mesh import create_mesh

    values = create_mesh(mesh_name).vertices.sum(dim=1).double().numpy()
    values = values - values.min()
    return ((values / values.max()) ** 2).astype(np.float32)


def vertex_values(mesh_name: str) -> np.ndarray:
    """(V,) float32 in [0, 1]: the dp_vertex value of each vertex of the mesh (see the module docstring)."""
    return _vertex_values(mesh_name, str(_mesh_data_dir(mesh_name)))


class VertexVisualizer(Visualizer):
    """`dp_vertex`; values(mesh name) -> (V,) in [0, 1] (default `vertex_values`)."""

    needs_charts = False

    def __init__(self, values: Optional[Callable[[str], np.ndarray]] = None, alpha: float = 0.7,
                 cmap: int = cv2.COLORMAP_JET):
        self.values = values or vertex_values
        self.alpha = float(alpha)
        self.cmap = cmap

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        for region in vertex_regions(image.shape, boxes_xyxy, results):
            table = np.asarray(self.values(region.mesh_name), dtype=np.float32)
            if region.vertices.size and region.vertices.max() >= len(table):
                raise ValueError(f"mesh '{region.mesh_name}': vertex {region.vertices.max()} out of range of its "
                                 f"{len(table)} vertex values")
            v = np.clip(table[np.maximum(region.vertices, 0)], 0, 1) * 255.0
            blend_masked(image, region, colorize(v, self.cmap), region.foreground, self.alpha)


def mesh_texcoords(mesh_name: str) -> np.ndarray:
    """(V, 2) texture coordinates of the mesh (its ``texcoords`` file, through the mesh catalog)."""
    from ..structures.mesh import create_mesh

    t = create_mesh(mesh_name).texcoords
    if t is None:
        raise ValueError(f"dp_cse_texture: mesh '{mesh_name}' has no texcoords file")
    return t.numpy()


def load_texture_atlases(spec: Optional[str]) -> Optional[Dict[str, np.ndarray]]:
    """`--texture_atlases_map`: a JSON {mesh name: image path} -> {mesh name: BGR(A) uint8 image}."""
    if spec is None:
        return None
    try:
        paths = json.loads(spec)
    except json.JSONDecodeError as e:
        raise ValueError(f"--texture_atlases_map: not a JSON object of mesh name -> image path ({e})") from e
    if not isinstance(paths, dict):
        raise ValueError("--texture_atlases_map: expected a JSON object of mesh name -> image path")
    out = {}
    for name, path in paths.items():
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read texture {path} (mesh {name})")
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        out[str(name)] = img
    return out


class CseTextureVisualizer(Visualizer):
    """`dp_cse_texture`; textures: {mesh name: BGR or BGRA uint8 image}; texcoords(mesh) -> (V, 2)."""

    needs_charts = False

    def __init__(self, textures: Optional[Dict[str, np.ndarray]],
                 texcoords: Optional[Callable[[str], np.ndarray]] = None):
        if not textures:
            raise ValueError("dp_cse_texture needs textures (--texture_atlases_map '{\"<mesh>\": \"<image>\"}')")
        self.textures: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        for name, tex in textures.items():
            tex = np.asarray(tex)
            if tex.ndim != 3 or tex.shape[2] not in (3, 4) or tex.dtype != np.uint8:
                raise ValueError(f"texture of mesh '{name}': expected an H x W x 3 (BGR) or x 4 (BGRA) uint8 image")
            if tex.shape[2] == 4:
                alpha = tex[:, :, 3].astype(np.float32) / 255.0
            else:
                alpha = (tex.astype(np.int64).sum(axis=-1) > 0).astype(np.float32)
            self.textures[name] = (np.ascontiguousarray(tex[:, :, :3]), alpha)
        self.texcoords = texcoords or mesh_texcoords

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        for region in vertex_regions(image.shape, boxes_xyxy, results):
            if region.mesh_name not in self.textures:
                continue
            tex, alpha = self.textures[region.mesh_name]
            th, tw = tex.shape[:2]
            uv = np.clip(np.asarray(self.texcoords(region.mesh_name), dtype=np.float32), 0, 1)
            vi = np.maximum(region.vertices, 0)
            x = np.minimum((uv[vi, 0] * tw).astype(np.int64), tw - 1)
            y = np.minimum((uv[vi, 1] * th).astype(np.int64), th - 1)
            a = alpha[y, x] * region.foreground
            blend_masked(image, region, tex[y, x], a > 0, a)
