"""A small synthetic body mesh with 24 UV charts and true geodesic distances, written in the official
DensePose eval-data formats, so the real loading and scoring code can run without the official files.

Mesh: a strip of 24 parts laid side by side along x and bent into a half-cylinder across its width; each
part is a ``grid x grid`` vertex patch whose chart is ``u = (column within part) / (grid - 1)``,
``v = row / (grid - 1)``. Neighbouring parts share their seam column (as in SMPL, a seam vertex appears
once per chart in the subdivided point list). Geodesic distances are shortest paths along the mesh edges
(grid edges plus one diagonal per quad), computed with Dijkstra.

Files (same names, variables, shapes and layouts as the official ones):

* ``SMPL_subdiv.mat``: ``U_subdiv``, ``V_subdiv`` (N, 1) float64, ``Part_ID_subdiv`` (N, 1) uint8;
* ``SMPL_SUBDIV_TRANSFORM.mat``: ``index`` (N, 1) uint32, 1-based vertex of each point;
* ``Pdist_matrix.pkl``: a Python-2 style protocol-2 pickle (as the official file: loaded with
  ``encoding="latin1"``) of ``{"Pdist_matrix": float32 array (K, 1)}``, K = n (n - 1) / 2, pair a < b at
  ``b (b - 1) / 2 + a``. Written streaming, so full-size tables (27,554 vertices) can be produced too.

The same body as a CSE mesh (detectron2's mesh files, see ``densepose_fnl.data.meshes``; all Python-3
pickles read by a plain ``pickle.load``): ``<name>.pkl`` = ``{"vertices": float32 (n, 3), "faces": int64
(F, 3)}`` (two triangles per grid quad, split along the modelled diagonal), ``geodists/geodists_<name>.pkl``
= float32 array (n, n) (written streaming, row by row), ``symmetry/symmetry_<name>.pkl`` =
``{"vertex_transforms": int64 (n,)}`` (the vertex a horizontal flip maps each vertex to: its chart point
flipped through the chart symmetry tables, then the nearest vertex -- so chart and vertex annotations flip
alike), ``texcoords/texcoords_<name>.pkl`` = float32 (n, 2) global UVs of the strip.
"""
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
from pycocotools import mask as mask_utils
from scipy.io import savemat
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

NUM_PARTS = 24


@dataclass
class SyntheticBodyMesh:
    vertices: np.ndarray  # (n, 3) float64
    subdiv_uv: np.ndarray  # (N, 2) float64 chart coordinates of each subdivided point
    subdiv_part: np.ndarray  # (N,) int 1..24
    subdiv_vertex: np.ndarray  # (N,) int 0-based mesh vertex of each point
    geodesic: np.ndarray  # (n, n) float64 shortest-path distances
    grid: int

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_columns(self) -> int:
        return (self.grid - 1) * NUM_PARTS + 1

    def faces(self) -> np.ndarray:
        """(F, 3) int64 triangles: each grid quad split along the diagonal the geodesic graph uses."""
        g, nc = self.grid, self.num_columns
        rows, cols = np.meshgrid(np.arange(g - 1), np.arange(nc - 1), indexing="ij")
        a = (rows * nc + cols).ravel()
        b, c, d = a + 1, a + nc, a + nc + 1
        return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)

    def texcoords(self) -> np.ndarray:
        """(n, 2) float32 global UVs: column and row of the strip, normalised to [0, 1]."""
        g, nc = self.grid, self.num_columns
        rows, cols = np.divmod(np.arange(self.num_vertices), nc)
        return np.stack([cols / (nc - 1), rows / (g - 1)], 1).astype(np.float32)

    def nearest_vertices(self, i_points, u_points, v_points) -> np.ndarray:
        """0-based vertex nearest in (U, V) among the points of each part (official findAllClosestVerts on
        this mesh's subdivided points); -1 for part 0."""
        i_points = np.asarray(i_points).astype(np.int64).reshape(-1)
        query = np.stack([np.asarray(u_points, np.float64).reshape(-1), np.asarray(v_points, np.float64).reshape(-1)], 1)
        out = np.full(i_points.shape, -1, dtype=np.int64)
        for p in np.unique(i_points[i_points > 0]).tolist():
            sel_pts = self.subdiv_part == p
            sel = i_points == p
            d = ((self.subdiv_uv[sel_pts][:, None, :] - query[sel][None, :, :]) ** 2).sum(-1)
            out[sel] = self.subdiv_vertex[sel_pts][np.argmin(d, axis=0)]
        return out

    def vertex_symmetry(self, u_tables: np.ndarray, v_tables: np.ndarray, label_symmetries: Sequence[int]) -> np.ndarray:
        """(n,) int64: each vertex's chart point (its first chart) flipped as a chart annotation is (part
        label swapped, (u, v) through the tables at ``[v_idx, u_idx]``), then the nearest vertex."""
        g, nc = self.grid, self.num_columns
        rows, cols = np.divmod(np.arange(self.num_vertices), nc)
        part = np.minimum(cols // (g - 1), NUM_PARTS - 1) + 1
        u = (cols - (part - 1) * (g - 1)) / (g - 1)
        v = rows / (g - 1)
        u_idx = (u * 255).astype(np.int64)
        v_idx = (v * 255).astype(np.int64)
        u_new = np.asarray(u_tables)[part - 1, v_idx, u_idx]
        v_new = np.asarray(v_tables)[part - 1, v_idx, u_idx]
        return self.nearest_vertices(np.asarray(label_symmetries)[part], u_new, v_new)

    def condensed(self) -> np.ndarray:
        """Distances in the official condensed order (pair a < b at b (b - 1) / 2 + a), float32."""
        rows, cols = np.tril_indices(self.num_vertices, -1)
        return self.geodesic[rows, cols].astype(np.float32)

    def vertex_of(self, part: int, u: float, v: float) -> int:
        """0-based mesh vertex at chart point (u, v) of part (1-based), on the grid."""
        g = self.grid
        col = (part - 1) * (g - 1) + int(round(u * (g - 1)))
        row = int(round(v * (g - 1)))
        return row * ((g - 1) * NUM_PARTS + 1) + col


def make_synthetic_mesh(grid: int = 6, part_length: float = 0.12, radius: float = 0.06) -> SyntheticBodyMesh:
    g = int(grid)
    ncols = (g - 1) * NUM_PARTS + 1
    cols, rows = np.meshgrid(np.arange(ncols), np.arange(g))  # vertex id = row * ncols + col
    angle = rows / (g - 1) * np.pi
    vertices = np.stack(
        [cols * part_length / (g - 1), radius * np.cos(angle), radius * np.sin(angle)], axis=-1
    ).reshape(-1, 3)
    vid = (rows * ncols + cols)
    edges = [
        (vid[:, :-1], vid[:, 1:]),  # along x
        (vid[:-1, :], vid[1:, :]),  # across
        (vid[:-1, :-1], vid[1:, 1:]),  # one diagonal per quad
    ]
    a = np.concatenate([e[0].ravel() for e in edges])
    b = np.concatenate([e[1].ravel() for e in edges])
    w = np.linalg.norm(vertices[a] - vertices[b], axis=1)
    n = len(vertices)
    graph = coo_matrix((w, (a, b)), shape=(n, n)).tocsr()
    geodesic = dijkstra(graph, directed=False)
    uv, part, vert = [], [], []
    for p in range(NUM_PARTS):
        for r in range(g):
            for c in range(g):
                uv.append((c / (g - 1), r / (g - 1)))
                part.append(p + 1)
                vert.append(r * ncols + p * (g - 1) + c)
    return SyntheticBodyMesh(
        vertices=vertices,
        subdiv_uv=np.array(uv, dtype=np.float64),
        subdiv_part=np.array(part, dtype=np.int64),
        subdiv_vertex=np.array(vert, dtype=np.int64),
        geodesic=geodesic,
        grid=g,
    )


# ----------------------------------------------------------------------------- official file formats
def _short_binstring(s: bytes) -> bytes:
    return b"U" + bytes([len(s)]) + s


def _binint(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def write_pdist_pickle(path: Union[str, Path], count: int, chunks: Iterable[np.ndarray]) -> Path:
    """Write ``{"Pdist_matrix": float32 array (count, 1)}`` as Python 2's cPickle (protocol 2) would, the
    data streamed from ``chunks`` (float32 arrays in condensed order, ``count`` values in total)."""
    path = Path(path)
    nbytes = count * 4
    if nbytes >= 2**31:
        raise ValueError("table too large for a protocol-2 BINSTRING")
    head = b"".join(
        [
            b"\x80\x02}q\x01",  # PROTO 2, EMPTY_DICT, BINPUT
            _short_binstring(b"Pdist_matrix") + b"q\x02",
            b"cnumpy.core.multiarray\n_reconstruct\nq\x03",
            b"cnumpy\nndarray\nq\x04",
            b"K\x00\x85q\x05",  # (0,)
            _short_binstring(b"b") + b"\x87q\x06Rq\x07",  # _reconstruct(ndarray, (0,), 'b')
            b"(K\x01",  # state: (1, shape, dtype, is_fortran, data)
            _binint(count) + b"K\x01\x86q\x08",  # shape (count, 1)
            b"cnumpy\ndtype\nq\x09" + _short_binstring(b"f4") + b"K\x00K\x01\x87Rq\x0a",
            b"(K\x03" + _short_binstring(b"<") + b"NNN" + _binint(-1) + _binint(-1) + b"K\x00tb",
            b"\x89",  # is_fortran False
            b"T" + struct.pack("<i", nbytes),  # BINSTRING
        ]
    )
    written = 0
    with open(path, "wb") as f:
        f.write(head)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype="<f4").ravel()
            f.write(chunk.tobytes())
            written += chunk.size
        if written != count:
            raise ValueError(f"wrote {written} distances, expected {count}")
        f.write(b"tq\x0bbs.")  # TUPLE, BINPUT, BUILD, SETITEM, STOP
    return path


def write_geodists_pickle(path: Union[str, Path], n: int, rows: Iterable[np.ndarray]) -> Path:
    """Write a float32 array (n, n) as Python 3's ``pickle.dump(array)`` would (numpy's reduce; the data as
    one BINBYTES8 block), streamed from ``rows`` (float32 arrays holding consecutive rows, n * n values)."""
    path = Path(path)
    head = b"".join(
        [
            b"\x80\x04",  # PROTO 4
            b"cnumpy.core.multiarray\n_reconstruct\n",
            b"cnumpy\nndarray\n",
            b"K\x00\x85",  # (0,)
            b"C\x01b\x87R",  # _reconstruct(ndarray, (0,), b'b')
            b"(K\x01",  # state: (1, shape, dtype, is_fortran, data)
            _binint(n) + _binint(n) + b"\x86",
            b"cnumpy\ndtype\n" + _short_binstring(b"f4") + b"\x89\x88\x87R",
            b"(K\x03" + _short_binstring(b"<") + b"NNN" + _binint(-1) + _binint(-1) + b"K\x00tb",
            b"\x89",  # is_fortran False
            b"\x8e" + struct.pack("<Q", n * n * 4),  # BINBYTES8
        ]
    )
    written = 0
    with open(path, "wb") as f:
        f.write(head)
        for chunk in rows:
            chunk = np.ascontiguousarray(chunk, dtype="<f4").ravel()
            f.write(chunk.tobytes())
            written += chunk.size
        if written != n * n:
            raise ValueError(f"wrote {written} distances, expected {n * n}")
        f.write(b"tb.")  # TUPLE, BUILD, STOP
    return path


def mesh_file_names(mesh_name: str) -> Dict[str, str]:
    """The files of a mesh relative to the mesh data directory (detectron2's builtin layout)."""
    return {
        "data": f"{mesh_name}.pkl",
        "geodists": f"geodists/geodists_{mesh_name}.pkl",
        "symmetry": f"symmetry/symmetry_{mesh_name}.pkl",
        "texcoords": f"texcoords/texcoords_{mesh_name}.pkl",
    }


def write_mesh_files(
    mesh: SyntheticBodyMesh,
    out_dir: Union[str, Path],
    mesh_name: str,
    uv_tables: Optional[Sequence[np.ndarray]] = None,
) -> Dict[str, Path]:
    """Write the four CSE mesh files of ``mesh`` under out_dir (see the module docstring). uv_tables: the
    chart symmetry tables (U, V) the vertex symmetry follows (default: the synthetic dataset's)."""
    import pickle

    from ..structures.densepose_annotations import DensePoseTransformData

    if uv_tables is None:
        from ..data.synthetic import synthetic_uv_symmetry_tables

        uv_tables = synthetic_uv_symmetry_tables()
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in mesh_file_names(mesh_name).items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    with open(paths["data"], "wb") as f:
        pickle.dump({"vertices": mesh.vertices.astype(np.float32), "faces": mesh.faces()}, f, protocol=4)
    symmetry = mesh.vertex_symmetry(uv_tables[0], uv_tables[1], DensePoseTransformData.POINT_LABEL_SYMMETRIES)
    with open(paths["symmetry"], "wb") as f:
        pickle.dump({"vertex_transforms": symmetry.astype(np.int64)}, f, protocol=4)
    with open(paths["texcoords"], "wb") as f:
        pickle.dump(mesh.texcoords(), f, protocol=4)
    n = mesh.num_vertices
    write_geodists_pickle(paths["geodists"], n, (mesh.geodesic[r : r + 256].astype(np.float32) for r in range(0, n, 256)))
    return paths


def write_subdiv_files(out_dir: Union[str, Path], subdiv_uv: np.ndarray, subdiv_part: np.ndarray, subdiv_vertex: np.ndarray) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    savemat(
        str(out_dir / "SMPL_subdiv.mat"),
        {
            "U_subdiv": np.asarray(subdiv_uv[:, 0], dtype=np.float64)[:, None],
            "V_subdiv": np.asarray(subdiv_uv[:, 1], dtype=np.float64)[:, None],
            "Part_ID_subdiv": np.asarray(subdiv_part, dtype=np.uint8)[:, None],
        },
    )
    savemat(str(out_dir / "SMPL_SUBDIV_TRANSFORM.mat"), {"index": (np.asarray(subdiv_vertex) + 1).astype(np.uint32)[:, None]})


def write_eval_data(mesh: SyntheticBodyMesh, out_dir: Union[str, Path]) -> Path:
    """Write the three official eval files for ``mesh`` into out_dir."""
    out_dir = Path(out_dir)
    write_subdiv_files(out_dir, mesh.subdiv_uv, mesh.subdiv_part, mesh.subdiv_vertex)
    table = mesh.condensed()
    write_pdist_pickle(out_dir / "Pdist_matrix.pkl", table.size, [table])
    return out_dir


# ----------------------------------------------------------------------------- annotations
def encode_rle(mask: np.ndarray) -> Dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def densepose_annotation(
    ann_id: int,
    image_id: int,
    bbox: Sequence[float],
    points: Optional[np.ndarray] = None,
    coarse_mask: Optional[np.ndarray] = None,
    iscrowd: int = 0,
    category_id: int = 1,
) -> Dict[str, Any]:
    """A COCO-DensePose person annotation. points: (P, 5) rows (x, y, I, U, V), x and y in the 0..255 box
    frame; coarse_mask: (256, 256) label map 0..14 giving the 14 ``dp_masks`` (default: all part 1)."""
    x, y, w, h = [float(v) for v in bbox]
    ann: Dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": iscrowd,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if coarse_mask is None:
            coarse_mask = np.ones((256, 256), dtype=np.uint8)
        ann.update(
            dp_x=points[:, 0].tolist(),
            dp_y=points[:, 1].tolist(),
            dp_I=points[:, 2].tolist(),
            dp_U=points[:, 3].tolist(),
            dp_V=points[:, 4].tolist(),
            dp_masks=[encode_rle(coarse_mask == k) if (coarse_mask == k).any() else [] for k in range(1, 15)],
        )
    return ann


def coco_dataset(images: List[Dict[str, Any]], annotations: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }


def ensure_synthetic_eval_data(out_dir: str) -> str:
    """Write (once) the eval files of the synthetic body mesh into out_dir (main process; others wait)."""
    import os

    from ..utils import comm
    from .eval_data import EVAL_DATA_FILES

    if comm.is_main_process() and not all(os.path.isfile(os.path.join(out_dir, f)) for f in EVAL_DATA_FILES):
        tmp = out_dir + f".tmp{os.getpid()}"
        write_eval_data(make_synthetic_mesh(), tmp)
        os.makedirs(out_dir, exist_ok=True)
        for f in EVAL_DATA_FILES:
            os.replace(os.path.join(tmp, f), os.path.join(out_dir, f))
        if not os.listdir(tmp):
            os.rmdir(tmp)
    comm.synchronize()
    return out_dir
