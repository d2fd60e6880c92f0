"""Continuous surface embeddings -> mesh vertices: the nearest vertex embedding of each pixel.

One implementation for evaluation (at the ground-truth points) and inference (every pixel of the box),
with the resampling and masking of detectron2's CSE evaluation (``DensePoseCocoEval
.computeOgps_single_pair_cse`` / ``findClosestVertsCse``): the embedding and the coarse segmentation are
resized bilinearly (align_corners False) to the integer box size, and pixels whose coarse label is
background get -1. At the ground-truth points the pixel -> vertex distance is detectron2's
``squared_euclidean_distance_matrix`` (-2 p.v + |p|^2 + |v|^2: the same arithmetic, so the evaluator's
argmin). Every pixel of a box (inference) is an exact nearest-neighbour search that exploits the smooth
embedding (`_nearest_in_box`: tiles of pixels prune the vertices by the triangle inequality), with the score
|v|^2 - 2 p.v (the row constant |p|^2 dropped: the same argmin, up to float rounding at near-ties). Both
work in chunks, so no (pixels x vertices) matrix exists whole: 2^20 floats (4 MB, cache-sized) per dense chunk, <= 2^22 per pruned batch.

Inference results (`CseResultsConverter`): per person a `DensePoseEmbeddingResult` with the vertex map over
its box, and, for SMPL, the DensePose chart (I, U, V) of each vertex (`VertexChartMap`, read from the
official ``SMPL_subdiv.mat`` / ``SMPL_SUBDIV_TRANSFORM.mat``), so CSE models feed the chart paths (IUV
images, chart visualizers) too. Everything here starts from Instances (pred_boxes, pred_classes,
pred_densepose = DensePoseEmbeddingPredictorOutput) and a vertex-embeddings callable, whatever runtime made them.
"""
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CHART_MESH_NAMES", "ChartFileMissingError", "CseResultsConverter", "VertexChartMap", "closest_vertices",
           "is_cse_config", "predictor_vertex_embeddings", "resample_to_box", "squared_euclidean_distance_matrix"]

logger = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 20  # floats per dense distance chunk (4 MB: in cache; 2x faster than 16 MB here)
_PRUNE_BUDGET = 1 << 22  # floats per batch of the pruned search's tiles


def squared_euclidean_distance_matrix(pts1: torch.Tensor, pts2: torch.Tensor) -> torch.Tensor:
    """(M, N) squared distances between rows of pts1 (M, D) and pts2 (N, D) (detectron2's formula)."""
    edm = torch.mm(-2 * pts1, pts2.t())
    edm += (pts1 * pts1).sum(1, keepdim=True) + (pts2 * pts2).sum(1, keepdim=True).t()
    return edm.contiguous()


def _nearest(pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor, chunk: int) -> torch.Tensor:
    """Nearest vertex of each pixel embedding by detectron2's distance matrix (the evaluator's arithmetic)."""
    out = torch.empty(len(pixel_embeddings), dtype=torch.long, device=pixel_embeddings.device)
    for s in range(0, len(pixel_embeddings), chunk):
        edm = squared_euclidean_distance_matrix(pixel_embeddings[s : s + chunk], vertex_embeddings)
        out[s : s + chunk] = edm.argmin(dim=1)
    return out


def _argmin_last(scores: torch.Tensor) -> torch.Tensor:
    """argmin over the last dim (first index on ties); on CPU numpy's, ~6x faster than torch's here."""
    if scores.device.type != "cpu":
        return scores.argmin(dim=-1)
    return torch.from_numpy(scores.numpy().argmin(axis=-1))


def _nearest_dense(pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor, vertex_norms: torch.Tensor,
                   chunk: int) -> torch.Tensor:
    """Nearest vertex of each pixel embedding against all vertices, by the score |v|^2 - 2 p.v."""
    out = torch.empty(len(pixel_embeddings), dtype=torch.long, device=pixel_embeddings.device)
    for s in range(0, len(pixel_embeddings), chunk):
        out[s : s + chunk] = _argmin_last(torch.addmm(vertex_norms, pixel_embeddings[s : s + chunk],
                                                      vertex_embeddings.t(), alpha=-2))
    return out


_FINE_TILE = 8  # pixels per side of the fine pruning tiles (their pixels share one candidate list)
_PRUNE_MIN_PIXELS = 2048  # fewer body pixels: the dense search (pruning's overhead does not pay, measured at ~600 px)
_PRUNE_FALLBACK = 0.4  # coarse tiles keep more than this share of the vertices: dense search (measured break-even ~0.3-0.6)


def _tile_stats(tiles: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre (mean of the masked points) and radius (largest distance of one to it) of each tile (G, M, D)."""
    n = mask.sum(1, keepdim=True).clamp(min=1).to(tiles.dtype)
    centre = (tiles * mask[..., None]).sum(1) / n
    radius = ((tiles - centre[:, None]).square().sum(-1) * mask).amax(1).sqrt()
    return centre, radius


def _candidates(dist: torch.Tensor, radius: torch.Tensor, valid: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Which columns of each row of dist (G, K) (exact distances of a tile centre) may hold the nearest vertex
    of a point within `radius` of the centre: dist <= min + 2 radius (triangle inequality; a small relative
    slack absorbs float rounding). -> (keep (G, K) bool, counts (G,))."""
    if valid is not None:
        dist = dist.masked_fill(~valid, float("inf"))
    bound = dist.amin(1, keepdim=True) + 2 * radius[:, None]
    keep = dist <= bound * (1 + 1e-5) + 1e-6
    return keep, keep.sum(1)


def _packed(keep: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Column indices of the kept entries of each row, ascending and left-packed: (G, max count)."""
    return torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, : int(counts.max())]


def _group_chunks(counts: torch.Tensor, rows: int, budget: int):
    """Rows sorted by candidate count, in slices whose padded (rows x items x count) stays under budget."""
    order = torch.argsort(counts)
    sorted_counts = counts[order].tolist()
    s = 0
    while s < len(order):
        e = s + 1
        while e < len(order) and (e + 1 - s) * rows * sorted_counts[e] <= budget:
            e += 1
        yield order[s:e]
        s = e


def _coarse_tile(h: int, w: int) -> int:
    """Pixels per side of the coarse tiles: ~1/10 of the box side, a multiple of the fine tile (measured best
    on smooth embeddings of 150 x 80 to 600 x 300 boxes)."""
    return 2 * _FINE_TILE if max(h, w) <= 256 else 4 * _FINE_TILE


def _nearest_in_box(emb: torch.Tensor, fg: torch.Tensor, vertex_embeddings: torch.Tensor, chunk: int
                    ) -> torch.Tensor:
    """Nearest vertex of every foreground pixel of emb (D, H, W) -> (H, W) long, -1 off fg.

    The embedding is smooth over the box (a bilinear upsampling of the head's S x S map), so pixels near each
    other have near embeddings: for a tile of pixels within radius r of their centre c, only vertices v with
    |c - v| <= min_u |c - u| + 2r can be the nearest of any of them. Coarse tiles prune all vertices, their
    fine tiles prune the coarse tile's candidates, and each pixel takes the argmin over its fine tile's list
    (ascending vertex order, so ties resolve to the lowest index as a dense argmin does). Exact; it falls
    back to the dense search (`chunk` pixels at a time) when pruning keeps most vertices (embeddings far
    from all vertices)."""
    d, h, w = emb.shape
    fine = _FINE_TILE
    coarse = _coarse_tile(h, w)
    vv = vertex_embeddings.square().sum(1)
    ty, tx = -(-h // coarse), -(-w // coarse)
    pad = (0, tx * coarse - w, 0, ty * coarse - h)
    e = F.pad(emb, pad).reshape(d, ty, coarse, tx, coarse).permute(1, 3, 2, 4, 0).reshape(ty * tx, coarse * coarse, d)
    m = F.pad(fg, pad).reshape(ty, coarse, tx, coarse).permute(0, 2, 1, 3).reshape(ty * tx, coarse * coarse)
    out = torch.full((ty * tx, coarse * coarse), -1, dtype=torch.long, device=emb.device)
    used = m.any(1).nonzero()[:, 0]
    # coarse tiles in groups, so the (tiles x vertices) distances of a group stay within one chunk
    group = max(1, _PRUNE_BUDGET // max(len(vertex_embeddings), 1))
    for s in range(0, len(used), group):
        tiles = used[s : s + group]
        out[tiles] = _nearest_in_tiles(e[tiles], m[tiles], vertex_embeddings, vv, coarse, fine, chunk)
    return out.reshape(ty, tx, coarse, coarse).permute(0, 2, 1, 3).reshape(ty * coarse, tx * coarse)[:h, :w]


def _nearest_in_tiles(e: torch.Tensor, m: torch.Tensor, vertex_embeddings: torch.Tensor, vv: torch.Tensor,
                      coarse: int, fine: int, chunk: int) -> torch.Tensor:
    """`_nearest_in_box` on coarse tiles e (G, c*c, D) with masks m (G, c*c) -> (G, c*c) vertex ids, -1 off m."""
    g, _, d = e.shape
    centre, radius = _tile_stats(e, m)
    dist = torch.cdist(centre, vertex_embeddings, compute_mode="donot_use_mm_for_euclid_dist")
    keep, counts = _candidates(dist, radius)
    if counts.float().mean() > _PRUNE_FALLBACK * len(vertex_embeddings):
        res = torch.full(m.shape, -1, dtype=torch.long, device=e.device)
        res[m] = _nearest_dense(e[m], vertex_embeddings, vv, chunk)
        return res
    cand = _packed(keep, counts)
    # fine tiles: (G, S, f*f, D) in each coarse tile, S = (coarse / fine)^2
    k = coarse // fine
    ef = e.reshape(g, k, fine, k, fine, d).permute(0, 1, 3, 2, 4, 5).reshape(g, k * k, fine * fine, d)
    mf = m.reshape(g, k, fine, k, fine).permute(0, 1, 3, 2, 4).reshape(g, k * k, fine * fine)
    fcentre, fradius = _tile_stats(ef.reshape(g * k * k, fine * fine, d), mf.reshape(g * k * k, fine * fine))
    fcentre, fradius = fcentre.reshape(g, k * k, d), fradius.reshape(g, k * k)
    res_f = torch.full((g, k * k, fine * fine), -1, dtype=torch.long, device=e.device)
    for rows in _group_chunks(counts, k * k * fine * fine, _PRUNE_BUDGET):
        n, kc = len(rows), int(counts[rows].max())
        valid = torch.arange(kc, device=e.device)[None] < counts[rows][:, None]
        vids = cand[rows, :kc].where(valid, cand[rows, :1])  # (n, kc) vertex ids; padding repeats the first
        fd = torch.cdist(fcentre[rows], vertex_embeddings[vids], compute_mode="donot_use_mm_for_euclid_dist")
        sub_keep, sub_counts = _candidates(fd.reshape(n * k * k, kc), fradius[rows].reshape(-1),
                                           valid[:, None].expand(n, k * k, kc).reshape(n * k * k, kc))
        sub = _packed(sub_keep, sub_counts)
        sub_vids = vids.repeat_interleave(k * k, 0).gather(1, sub)  # (n*S, ks) vertex ids, ascending
        sub_valid = torch.arange(sub.shape[1], device=e.device)[None] < sub_counts[:, None]
        sub_vids = sub_vids.where(sub_valid, sub_vids[:, :1])
        px = ef[rows].reshape(n * k * k, fine * fine, d)
        scores = torch.baddbmm(vv[sub_vids][:, None], px, vertex_embeddings[sub_vids].transpose(1, 2), alpha=-2)
        res_f[rows] = sub_vids.gather(1, _argmin_last(scores)).reshape(n, k * k, fine * fine)
    res = res_f.reshape(g, k, k, fine, fine).permute(0, 1, 3, 2, 4).reshape(g, coarse * coarse)
    return res.where(m, torch.full_like(res, -1))


def resample_to_box(embedding: torch.Tensor, coarse_segm: torch.Tensor, h: int, w: int
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """detectron2's resampling of a person's maps to its box: embedding (D, h, w) and coarse labels (h, w)
    (bilinear, align_corners False; label = argmax over the coarse channels, 0 = background)."""
    labels = F.interpolate(coarse_segm.unsqueeze(0), (h, w), mode="bilinear", align_corners=False).argmax(dim=1)[0]
    emb = F.interpolate(embedding.unsqueeze(0), (h, w), mode="bilinear", align_corners=False)[0]
    return emb, labels


@torch.no_grad()  # an argmin: no gradient to keep
def closest_vertices(
    embedding: torch.Tensor,
    coarse_segm: torch.Tensor,
    bbox_xywh: Sequence[float],
    vertex_embeddings: torch.Tensor,
    points: Optional[Tuple[Union[torch.Tensor, Sequence[int]], Union[torch.Tensor, Sequence[int]]]] = None,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Closest mesh vertex (0-based; -1 on background) of one person's predicted embedding.

    Args:
        embedding: (D, Hm, Wm) float, the predictor's embedding of the person (box-relative).
        coarse_segm: (C, Hm, Wm) float coarse segmentation scores; argmax 0 = background.
        bbox_xywh: the person's box (x, y, w, h); outputs live on its integer size (int(h), int(w)).
        vertex_embeddings: (V, D) the mesh's vertex embeddings (the embedder's output for the mesh).
        points: optional (py, px) integer pixel coordinates in the box; then only those are matched.
        chunk_size: pixels per dense distance chunk (default: 2^20 / V).
    Returns:
        long tensor (H, W) (every pixel of the box), or (P,) at ``points``.
    """
    if embedding.dim() != 3 or coarse_segm.dim() != 3:
        raise ValueError(f"expected embedding (D, H, W) and coarse_segm (C, H, W), got {tuple(embedding.shape)}, "
                         f"{tuple(coarse_segm.shape)}")
    if vertex_embeddings.dim() != 2 or vertex_embeddings.shape[1] != embedding.shape[0]:
        raise ValueError(f"vertex embeddings {tuple(vertex_embeddings.shape)} do not match the embedding size "
                         f"{embedding.shape[0]}")
    w = max(int(bbox_xywh[2]), 1)
    h = max(int(bbox_xywh[3]), 1)
    device = embedding.device
    vertex_embeddings = vertex_embeddings.to(device=device, dtype=embedding.dtype)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(len(vertex_embeddings), 1))
    emb, labels = resample_to_box(embedding, coarse_segm, h, w)
    if points is not None:
        py = torch.as_tensor(points[0], dtype=torch.long, device=device).reshape(-1)
        px = torch.as_tensor(points[1], dtype=torch.long, device=device).reshape(-1)
        out = _nearest(emb[:, py, px].t(), vertex_embeddings, chunk)
        out[labels[py, px] <= 0] = -1
        return out
    fg = labels > 0
    if int(fg.sum()) >= _PRUNE_MIN_PIXELS:
        return _nearest_in_box(emb, fg, vertex_embeddings, chunk)
    out = torch.full((h, w), -1, dtype=torch.long, device=device)
    if fg.any():
        out[fg] = _nearest_dense(emb.permute(1, 2, 0)[fg], vertex_embeddings, vertex_embeddings.square().sum(1), chunk)
    return out


# ---------------------------------------------------------------------------------------------- charts
# the meshes whose vertices the eval data's subdivision files chart: SMPL, and the synthetic body (its synthetic
# eval data is the same body; a mismatched directory is caught by the vertex count)
CHART_MESH_NAMES = ("smpl_27554", "synthetic_body")


class ChartFileMissingError(FileNotFoundError):
    """A file of the vertex -> chart conversion is not on disk; the one-line message names it."""


class VertexChartMap:
    """Mesh vertex -> DensePose chart point (part I in 1..24, U, V in [0, 1]).

    The official ``SMPL_subdiv.mat`` lists the chart points of the subdivided SMPL (U_subdiv, V_subdiv,
    Part_ID_subdiv) and ``SMPL_SUBDIV_TRANSFORM.mat`` the 1-based mesh vertex of each point (``index``),
    the map detectron2's evaluation uses from chart points to the 27,554 vertices (``PDIST_transform``) and
    the vertex numbering of its CSE annotations (``dp_vertex`` = index - 1). A vertex on a chart seam has one
    point per chart: the first in file order is taken. A vertex without any point maps to part 0 (none).
    """

    def __init__(self, parts: torch.Tensor, uv: torch.Tensor, source: str = ""):
        if parts.dim() != 1 or uv.shape != (len(parts), 2):
            raise ValueError(f"expected parts (V,) and uv (V, 2), got {tuple(parts.shape)}, {tuple(uv.shape)}")
        self.parts = parts.long()
        self.uv = uv.float()
        self.source = source

    @property
    def num_vertices(self) -> int:
        return len(self.parts)

    @classmethod
    def from_eval_data(cls, eval_data_dir: Union[None, str, os.PathLike, "object"] = None) -> "VertexChartMap":
        """From the two subdivision files in the eval data directory (or a config's
        DENSEPOSE_EVALUATION.EVAL_DATA_DIR, else $DENSEPOSE_EVAL_DATA, else ./datasets/densepose_eval_data)."""
        from ..evaluation.eval_data import resolve_eval_data_dir

        return _chart_map_from_dir(str(resolve_eval_data_dir(eval_data_dir).absolute()))

    def __call__(self, vertices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(H, W) vertex map (-1 = background) -> labels (H, W) int64 and uv (2, H, W) float32, 0 off the body."""
        vertices = torch.as_tensor(vertices, dtype=torch.long)
        if vertices.numel() and int(vertices.max()) >= self.num_vertices:
            raise ValueError(f"vertex {int(vertices.max())} out of range: {self.source} maps {self.num_vertices} "
                             "vertices")
        fg = vertices >= 0
        idx = vertices.clamp(min=0).cpu()
        labels = torch.where(fg, self.parts[idx], torch.zeros((), dtype=torch.long))
        uv = self.uv[idx].permute(2, 0, 1) * fg[None]
        return labels, uv.contiguous()


def _read_mat(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    from scipy.io import loadmat

    if not path.is_file():
        raise ChartFileMissingError(
            f"vertex -> chart (I, U, V) conversion: {path} not found (the DensePose eval data file {path.name}; "
            "set DENSEPOSE_EVALUATION.EVAL_DATA_DIR or $DENSEPOSE_EVAL_DATA to its directory)")
    data = loadmat(str(path))
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: no variable(s) {missing} (has {sorted(k for k in data if not k.startswith('__'))})")
    return {k: np.asarray(data[k]).reshape(-1) for k in keys}


@lru_cache()
def _chart_map_from_dir(eval_data_dir: str) -> VertexChartMap:
    from ..evaluation.eval_data import SMPL_SUBDIV_FILE, SUBDIV_TRANSFORM_FILE

    d = Path(eval_data_dir)
    subdiv = _read_mat(d / SMPL_SUBDIV_FILE, ("U_subdiv", "V_subdiv", "Part_ID_subdiv"))
    index = _read_mat(d / SUBDIV_TRANSFORM_FILE, ("index",))["index"].astype(np.int64) - 1
    if len(index) != len(subdiv["Part_ID_subdiv"]) or index.min() < 0:
        raise ValueError(f"{d / SUBDIV_TRANSFORM_FILE}: {len(index)} 1-based indices for "
                         f"{len(subdiv['Part_ID_subdiv'])} points of {SMPL_SUBDIV_FILE}")
    n = int(index.max()) + 1
    vertex_ids, first = np.unique(index, return_index=True)  # first point of each vertex, in file order
    parts = np.zeros(n, dtype=np.int64)
    uv = np.zeros((n, 2), dtype=np.float32)
    parts[vertex_ids] = subdiv["Part_ID_subdiv"][first].astype(np.int64)
    uv[vertex_ids, 0] = subdiv["U_subdiv"][first]
    uv[vertex_ids, 1] = subdiv["V_subdiv"][first]
    return VertexChartMap(torch.from_numpy(parts), torch.from_numpy(uv), source=str(d / SUBDIV_TRANSFORM_FILE))


# ---------------------------------------------------------------------------------------------- results
CHART_MODES = ("none", "auto", "required")


class CseResultsConverter:
    """Instances of a CSE model -> one `DensePoseEmbeddingResult` per person.

    vertex_embeddings(mesh name) -> (V, D): the model's embedder (`predictor_vertex_embeddings`), called once
    per mesh. class_to_mesh_name: predicted class -> mesh (DATASETS.CLASS_TO_MESH_NAME_MAPPING; detectron2's
    default class 0 when the Instances have no pred_classes). charts: "none" (vertices only), "auto" (the
    chart too where the mesh has one and its files are there), "required" (a mesh without a chart or a missing
    file is an error naming it: IUV images and chart visualizers need it).
    """

    def __init__(self, *, vertex_embeddings: Callable[[str], torch.Tensor], class_to_mesh_name: Dict[int, str],
                 charts: str = "auto", eval_data_dir: Union[None, str, os.PathLike] = None,
                 chart_maps: Optional[Dict[str, VertexChartMap]] = None, chunk_size: Optional[int] = None):
        if charts not in CHART_MODES:
            raise ValueError(f"charts must be one of {CHART_MODES}, got {charts!r}")
        if not class_to_mesh_name:
            raise ValueError("CSE results need DATASETS.CLASS_TO_MESH_NAME_MAPPING (class -> mesh name)")
        self._vertex_embeddings = vertex_embeddings
        self.class_to_mesh_name = {int(k): str(v) for k, v in class_to_mesh_name.items()}
        self.charts = charts
        self.eval_data_dir = eval_data_dir
        self._chart_maps: Dict[str, Optional[VertexChartMap]] = dict(chart_maps or {})
        self._embeddings: Dict[str, torch.Tensor] = {}
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, cfg, vertex_embeddings: Callable[[str], torch.Tensor], charts: str = "auto",
                    **kwargs) -> "CseResultsConverter":
        """DATASETS.CLASS_TO_MESH_NAME_MAPPING, DENSEPOSE_EVALUATION.EVAL_DATA_DIR; also applies
        DATASETS.MESH_DATA_DIR (the mesh files the CSE visualizers read)."""
        from ..data.meshes import set_mesh_data_dir

        set_mesh_data_dir(cfg)
        mapping = {int(k): str(v) for k, v in cfg.DATASETS.CLASS_TO_MESH_NAME_MAPPING.items()}
        return cls(vertex_embeddings=vertex_embeddings, class_to_mesh_name=mapping, charts=charts,
                   eval_data_dir=cfg.DENSEPOSE_EVALUATION.EVAL_DATA_DIR or None, **kwargs)

    def mesh_name(self, pred_class: int) -> str:
        if int(pred_class) not in self.class_to_mesh_name:
            raise KeyError(f"predicted class {int(pred_class)} has no mesh in DATASETS.CLASS_TO_MESH_NAME_MAPPING "
                           f"{self.class_to_mesh_name}")
        return self.class_to_mesh_name[int(pred_class)]

    def vertex_embeddings(self, mesh_name: str) -> torch.Tensor:
        if mesh_name not in self._embeddings:
            with torch.no_grad():
                self._embeddings[mesh_name] = torch.as_tensor(self._vertex_embeddings(mesh_name)).detach().float().cpu()
        return self._embeddings[mesh_name]

    def chart_map(self, mesh_name: str) -> Optional[VertexChartMap]:
        """The mesh's vertex -> chart map under this converter's `charts` mode (None: no chart)."""
        if self.charts == "none":
            return None
        if mesh_name not in self._chart_maps:
            if mesh_name not in CHART_MESH_NAMES:
                if self.charts == "required":
                    raise ValueError(f"mesh '{mesh_name}' has no DensePose chart parametrisation (only "
                                     f"{', '.join(CHART_MESH_NAMES)}): its vertices cannot become I, U, V")
                self._chart_maps[mesh_name] = None
            else:
                try:
                    self._chart_maps[mesh_name] = VertexChartMap.from_eval_data(self.eval_data_dir)
                except ChartFileMissingError as e:
                    if self.charts == "required":
                        raise
                    logger.info("no charts for mesh %s: %s", mesh_name, e)
                    self._chart_maps[mesh_name] = None
        return self._chart_maps[mesh_name]

    def check_charts(self) -> None:
        """Load the chart map of every mapped mesh now (so a missing file fails before any image)."""
        for name in sorted(set(self.class_to_mesh_name.values())):
            self.chart_map(name)

    def __call__(self, boxes_xyxy: torch.Tensor, output, pred_classes: Optional[torch.Tensor] = None
                 ) -> List["DensePoseEmbeddingResult"]:
        from ..structures import DensePoseEmbeddingResult
        from .charts import int_box_xywh

        if len(boxes_xyxy) != len(output):
            raise ValueError(f"{len(boxes_xyxy)} boxes but {len(output)} DensePose outputs")
        if pred_classes is None:
            pred_classes = torch.zeros(len(boxes_xyxy), dtype=torch.long)
        results = []
        for k in range(len(boxes_xyxy)):
            mesh = self.mesh_name(int(pred_classes[k]))
            embeddings = self.vertex_embeddings(mesh)
            _, _, w, h = int_box_xywh(boxes_xyxy[k])
            emb = output.embedding[k].detach().float().cpu()
            segm = output.coarse_segm[k].detach().float().cpu()
            vertices = closest_vertices(emb, segm, (0, 0, w, h), embeddings, chunk_size=self.chunk_size)
            chart = self.chart_map(mesh)
            labels = uv = None
            if chart is not None:
                if chart.num_vertices != len(embeddings):
                    raise ValueError(f"mesh '{mesh}': {len(embeddings)} vertex embeddings but {chart.source} maps "
                                     f"{chart.num_vertices} vertices")
                labels, uv = chart(vertices)
            results.append(DensePoseEmbeddingResult(vertices=vertices, mesh_name=mesh, embedding=emb,
                                                    coarse_segm=segm, labels=labels, uv=uv))
        return results


def is_cse_config(cfg) -> bool:
    """Whether the config's DensePose head is the CSE (embedding) predictor."""
    return cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME == "DensePoseEmbeddingPredictor"


def predictor_vertex_embeddings(predictor) -> Callable[[str], torch.Tensor]:
    """mesh name -> (V, D) vertex embeddings of a predictor's CSE model: its own ``vertex_embeddings``
    callable if it has one (any runtime may provide it), else its PyTorch model's ``roi_heads.embedder``."""
    own = getattr(predictor, "vertex_embeddings", None)
    if callable(own):
        return own
    model = getattr(predictor, "model", predictor)
    embedder = getattr(getattr(model, "roi_heads", None), "embedder", None)
    if embedder is None:
        raise ValueError(f"{type(predictor).__name__} gives CSE outputs but no vertex embeddings (neither a "
                         "vertex_embeddings(mesh_name) method nor model.roi_heads.embedder)")
    return embedder
