"""Pixel -> mesh vertex matching of continuous surface embeddings: the nearest vertex embedding of a pixel's.

One implementation for evaluation (at the ground-truth points) and inference (every pixel of the box),
with the resampling and masking of detectron2's CSE evaluation (``DensePoseCocoEval
.computeOgps_single_pair_cse`` / ``findClosestVertsCse``): the embedding and the coarse segmentation are
resized bilinearly (align_corners False) to the integer box size, and pixels whose coarse label is
background get -1.

* At the ground-truth points (`vertices_at_points`) the pixel -> vertex distance is detectron2's
  ``squared_euclidean_distance_matrix`` (-2 p.v + |p|^2 + |v|^2: the same arithmetic, so the evaluator's
  argmin).
* Every pixel of a box (`closest_vertices`, inference) is an exact nearest-neighbour search, picked by the
  data (`VertexIndex`: a mesh's vertex embeddings with what the search reuses across boxes):
  - vertex embeddings on a low-dimensional surface (a trained CSE model's vary smoothly over the 2-D mesh;
    two-NN intrinsic dimension <= `TREE_MAX_DIMENSION`): a KD-tree over them (scipy's cKDTree, float64
    distances), queried in chunks of pixels;
  - otherwise (a random init's embeddings, coincident ones): tiles of pixels prune the vertices by the
    triangle inequality (`_nearest_in_box`; the embedding is smooth over the box), with the score
    |v|^2 - 2 p.v (the row constant |p|^2 dropped: the same argmin, up to float rounding at near-ties), or
    the dense search where pruning cannot pay.
  Everything works in chunks, so no (pixels x vertices) matrix exists whole: 2^20 floats (4 MB,
  cache-sized) per dense chunk, <= 2^22 per pruned batch.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..layers.eager_threads import eager_cpu_threads, run_in_parallel

__all__ = ["TREE_MAX_DIMENSION", "VertexIndex", "closest_vertices", "intrinsic_dimension", "resample_to_box",
           "squared_euclidean_distance_matrix", "vertices_at_points"]

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
    """Nearest vertex of each pixel embedding against all vertices, by the score |v|^2 - 2 p.v; in eager CPU
    inference the chunks are shared over the intra-op threads (a chunk's product is too small for the GEMM
    to split it well: 2 threads 1.5x)."""
    out = torch.empty(len(pixel_embeddings), dtype=torch.long, device=pixel_embeddings.device)
    starts = list(range(0, len(pixel_embeddings), chunk))

    def search(part):
        for s in part:
            out[s : s + chunk] = _argmin_last(torch.addmm(vertex_norms, pixel_embeddings[s : s + chunk],
                                                          vertex_embeddings.t(), alpha=-2))

    threads = min(eager_cpu_threads(pixel_embeddings, vertex_embeddings), len(starts))
    if threads < 2:
        search(starts)
    else:
        run_in_parallel(search, [(starts[i::threads],) for i in range(threads)])
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


# ---------------------------------------------------------------------------------------------- KD-tree
TREE_MAX_DIMENSION = 5.0  # two-NN dimension of the vertex embeddings up to which the KD-tree pays (surface: ~2)
_DIMENSION_SAMPLE = 256  # vertices whose two nearest neighbours estimate the dimension
_TREE_QUERY_PIXELS = 1 << 16  # pixels per KD-tree query (bounds the float64 copy of the pixels)
TREE_MAX_OFFSET = 15.0  # pixels' median distance to the vertices, in vertex spacings, up to which the tree pays
_TREE_PROBE = 64  # pixels whose exact nearest-vertex distance estimates that offset


def _two_nn(points: torch.Tensor, sample: int) -> Tuple[float, float]:
    """(two-NN dimension, median nearest-neighbour distance) of the rows of points (N, D); see
    `intrinsic_dimension`."""
    n = len(points)
    if n < 3:
        return math.inf, 0.0
    idx = torch.linspace(0, n - 1, min(sample, n)).round().long().unique()
    d = torch.cdist(points[idx].float(), points.float(), compute_mode="donot_use_mm_for_euclid_dist")
    d[torch.arange(len(idx)), idx] = math.inf  # not its own neighbour
    r = d.topk(2, dim=1, largest=False).values
    spacing = float(r[:, 0].median())
    ok = r[:, 0] > 0
    if int(ok.sum()) * 2 < len(idx):
        return math.inf, spacing
    log_ratio = torch.log(r[ok, 1] / r[ok, 0]).sum()
    return (float(ok.sum() / log_ratio) if log_ratio > 0 else math.inf), spacing


def intrinsic_dimension(points: torch.Tensor, sample: int = _DIMENSION_SAMPLE) -> float:
    """Two-NN estimate (Facco et al. 2017) of the dimension of the set the rows of points (N, D) lie on:
    N' / sum log(r2 / r1) over an evenly spaced sample of N' rows, r1 <= r2 their distances to their two
    nearest other rows. inf when most sampled rows coincide with another (no dimension: all ties)."""
    return _two_nn(points, sample)[0]


class VertexIndex:
    """A mesh's vertex embeddings (V, D) with what the box search reuses across boxes: their squared norms,
    their two-NN dimension and, when that is low (<= TREE_MAX_DIMENSION, CPU tensors), a KD-tree.

    Why the dimension decides: a trained CSE model's vertex embeddings are a smooth map of the 2-D mesh, and
    its pixel embeddings land near them, so a tree visits a few leaves per pixel (synthetic surface scene,
    300 x 160 box: 23 ms vs 86 ms tiled, 296 ms dense); random embeddings in 16-D make a tree visit most of
    its leaves (4x slower than the dense search). Per box, `tree_pays` checks that the pixels are near the
    surface (tools/benchmark_cse_matching.py measures all of it)."""

    def __init__(self, embeddings: torch.Tensor):
        if embeddings.dim() != 2:
            raise ValueError(f"vertex embeddings must be (V, D), got {tuple(embeddings.shape)}")
        self.embeddings = embeddings.detach().float().contiguous()
        self.norms = self.embeddings.square().sum(1)
        self._two_nn: Optional[Tuple[float, float]] = None
        self._tree = None

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dimension(self) -> float:
        """Two-NN intrinsic dimension of the vertex embeddings (`intrinsic_dimension`)."""
        if self._two_nn is None:
            self._two_nn = _two_nn(self.embeddings, _DIMENSION_SAMPLE)
        return self._two_nn[0]

    @property
    def spacing(self) -> float:
        """Median distance of a vertex embedding to its nearest other one."""
        _ = self.dimension  # computes both
        return self._two_nn[1]

    @property
    def uses_tree(self) -> bool:
        """Whether boxes may take the KD-tree: CPU embeddings of low dimension."""
        return self.embeddings.device.type == "cpu" and self.dimension <= TREE_MAX_DIMENSION

    def tree_pays(self, pixels: torch.Tensor) -> bool:
        """Whether the KD-tree pays for these pixel embeddings (P, D): it does when they lie near the vertex
        surface (the median nearest-vertex distance of an evenly spaced probe of `_TREE_PROBE` pixels, exact,
        <= TREE_MAX_OFFSET x the vertices' spacing); further off it, the ball a tree must search holds
        ever more vertices and the dense / tiled search wins."""
        if not self.uses_tree or len(pixels) == 0:
            return False
        probe = pixels[torch.linspace(0, len(pixels) - 1, min(_TREE_PROBE, len(pixels))).round().long()]
        offset = torch.cdist(probe.float(), self.embeddings, compute_mode="donot_use_mm_for_euclid_dist").amin(1)
        return float(offset.median()) <= TREE_MAX_OFFSET * self.spacing

    def nearest_by_tree(self, pixels: torch.Tensor) -> torch.Tensor:
        """Exact nearest vertex of each row of pixels (P, D) by the KD-tree (float64 distances) -> (P,) long."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.embeddings.numpy().astype(np.float64))
        out = np.empty(len(pixels), dtype=np.int64)
        workers = max(1, torch.get_num_threads())
        for s in range(0, len(pixels), _TREE_QUERY_PIXELS):
            chunk = pixels[s : s + _TREE_QUERY_PIXELS].detach().cpu().numpy().astype(np.float64)
            out[s : s + len(chunk)] = self._tree.query(chunk, k=1, workers=workers)[1]
        return torch.from_numpy(out)


def _index_of(vertex_embeddings: Union[torch.Tensor, VertexIndex], like: torch.Tensor) -> VertexIndex:
    if isinstance(vertex_embeddings, VertexIndex):
        return vertex_embeddings
    return VertexIndex(vertex_embeddings.to(device=like.device, dtype=like.dtype))


# ---------------------------------------------------------------------------------------------- entry points
@torch.no_grad()  # an argmin: no gradient to keep
def vertices_at_points(
    emb: torch.Tensor,
    labels: torch.Tensor,
    points: Tuple[Union[torch.Tensor, Sequence[int]], Union[torch.Tensor, Sequence[int]]],
    vertex_embeddings: torch.Tensor,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Closest vertex (-1 on background) at pixels (py, px) of a person's box-size maps (`resample_to_box`),
    by detectron2's distance matrix (the evaluator's arithmetic) -> (P,) long."""
    vertex_embeddings = vertex_embeddings.to(device=emb.device, dtype=emb.dtype)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(len(vertex_embeddings), 1))
    py = torch.as_tensor(points[0], dtype=torch.long, device=emb.device).reshape(-1)
    px = torch.as_tensor(points[1], dtype=torch.long, device=emb.device).reshape(-1)
    out = _nearest(emb[:, py, px].t(), vertex_embeddings, chunk)
    out[labels[py, px] <= 0] = -1
    return out


@torch.no_grad()  # an argmin: no gradient to keep
def closest_vertices(
    embedding: torch.Tensor,
    coarse_segm: torch.Tensor,
    bbox_xywh: Sequence[float],
    vertex_embeddings: Union[torch.Tensor, VertexIndex],
    points: Optional[Tuple[Union[torch.Tensor, Sequence[int]], Union[torch.Tensor, Sequence[int]]]] = None,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Closest mesh vertex (0-based; -1 on background) of one person's predicted embedding.

    Args:
        embedding: (D, Hm, Wm) float, the predictor's embedding of the person (box-relative).
        coarse_segm: (C, Hm, Wm) float coarse segmentation scores; argmax 0 = background.
        bbox_xywh: the person's box (x, y, w, h); outputs live on its integer size (int(h), int(w)).
        vertex_embeddings: (V, D) the mesh's vertex embeddings (the embedder's output for the mesh), or their
            `VertexIndex` (built once per mesh by a caller matching many boxes: `CseResultsConverter`).
        points: optional (py, px) integer pixel coordinates in the box; then only those are matched.
        chunk_size: pixels per dense distance chunk (default: 2^20 / V).
    Returns:
        long tensor (H, W) (every pixel of the box), or (P,) at ``points``.
    """
    verts = vertex_embeddings.embeddings if isinstance(vertex_embeddings, VertexIndex) else vertex_embeddings
    if embedding.dim() != 3 or coarse_segm.dim() != 3:
        raise ValueError(f"expected embedding (D, H, W) and coarse_segm (C, H, W), got {tuple(embedding.shape)}, "
                         f"{tuple(coarse_segm.shape)}")
    if verts.dim() != 2 or verts.shape[1] != embedding.shape[0]:
        raise ValueError(f"vertex embeddings {tuple(verts.shape)} do not match the embedding size "
                         f"{embedding.shape[0]}")
    w = max(int(bbox_xywh[2]), 1)
    h = max(int(bbox_xywh[3]), 1)
    emb, labels = resample_to_box(embedding, coarse_segm, h, w)
    if points is not None:
        return vertices_at_points(emb, labels, points, verts, chunk_size)
    fg = labels > 0
    out = torch.full((h, w), -1, dtype=torch.long, device=embedding.device)
    n_fg = int(fg.sum())
    if n_fg == 0:
        return out
    index = _index_of(vertex_embeddings, emb)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(len(index), 1))
    pixels = emb.permute(1, 2, 0)[fg]
    if index.tree_pays(pixels):
        out[fg] = index.nearest_by_tree(pixels)
    elif n_fg >= _PRUNE_MIN_PIXELS:
        return _nearest_in_box(emb, fg, index.embeddings, chunk)
    else:
        out[fg] = _nearest_dense(pixels, index.embeddings, index.norms, chunk)
    return out
