"""Speed and exactness of the CSE pixel -> vertex matching (`postprocess.vertex_search.closest_vertices`) by scene.

The matching's cost depends on the data: the KD-tree and the pruned (tiled) search pay when the vertex
embeddings lie on a low-dimensional surface and the pixel embeddings near it (a trained CSE model: its vertex
embeddings vary smoothly over the mesh, a 2-D surface in the 16-D embedding space, and its pixel embeddings
are pulled onto that surface by the loss); with random embeddings (a random-init model) the tiles fall back to
the dense search and `closest_vertices` does not use a tree. No trained weights are here, so the scenes are
synthetic and say what they model:

* ``random``: vertices and the head's S x S map i.i.d. N(0, 1) (embeddings unrelated to the vertices, as a
  random-init model): the worst case.
* ``surface``: vertices at uniform random points of a smooth surface in 16-D (cos(uv W + b), W ~ 3 N(0, 1):
  one to two oscillations per chart direction), the head map at points of that surface (a perfect fit).
* ``surface+0.1`` / ``+0.2`` / ``+0.3``: the same, plus N(0, sigma) off-surface noise per head pixel (an
  imperfect fit; the surface's coordinates have a standard deviation of ~0.7).

Each scene at each box size runs, interleaved over rounds: ``detectron2`` (the dense search with
detectron2's distance matrix and torch's argmin, 2^24 / V pixels per chunk: what this project ran before),
``dense`` (`_nearest_dense` on every body pixel), ``pruned`` (the tiled search `_nearest_in_box`, with its
dense fallback) and ``search`` (`closest_vertices` with the scene's `VertexIndex` built beforehand, as
`CseResultsConverter` keeps it per mesh: the shipping path, the KD-tree when the vertices' dimension is low,
else the tiles; the row says which).
Agreement: share of body pixels whose vertex equals a float64 brute force's (differences are near-ties
within float32 rounding).
"""
import statistics
import time
from typing import Dict, List, Sequence, Tuple

import torch

from ..postprocess import vertex_search as vs

__all__ = ["METHODS", "SCENES", "format_table", "make_scene", "run"]

SCENES = ("random", "surface", "surface+0.1", "surface+0.2", "surface+0.3")
METHODS = ("detectron2", "dense", "pruned", "search")
HEAD_SIZE = 64  # B-CSE's S (embedding and coarse segmentation maps are S x S)
EMBED_SIZE = 16


def make_scene(scene: str, num_vertices: int = 27554, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> vertex embeddings (V, D), head embedding map (D, S, S), coarse segmentation (2, S, S) whose body is
    an ellipse filling most of the box (~60 % of its pixels)."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}: one of {', '.join(SCENES)}")
    g = torch.Generator().manual_seed(seed)
    s, d = HEAD_SIZE, EMBED_SIZE
    if scene == "random":
        verts, field = torch.randn(num_vertices, d, generator=g), torch.randn(d, s, s, generator=g)
    else:
        w, b = torch.randn(2, d, generator=g) * 3, torch.rand(d, generator=g) * 6.283
        verts = torch.cos(torch.rand(num_vertices, 2, generator=g) @ w + b)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        points = torch.cos(torch.stack([yy, xx], -1).reshape(-1, 2) @ w + b)
        sigma = float(scene.split("+")[1]) if "+" in scene else 0.0
        field = (points + sigma * torch.randn(s * s, d, generator=g)).t().reshape(d, s, s).contiguous()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    body = (yy / 0.95) ** 2 + (xx / 0.8) ** 2 < 1
    segm = torch.stack([torch.zeros(s, s), body.float() * 2 - 1])
    return verts, field, segm


def _detectron2_dense(pixels: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    return vs._nearest(pixels, verts, max(1, (1 << 24) // len(verts)))


def _box_pixels(field, segm, h, w):
    emb, labels = vs.resample_to_box(field, segm, h, w)
    fg = labels > 0
    return emb, emb.permute(1, 2, 0)[fg].contiguous(), fg


def run(scenes: Sequence[str] = SCENES, boxes: Sequence[Tuple[int, int]] = ((46, 21), (150, 80), (300, 160)),
        rounds: int = 5, num_vertices: int = 27554, methods: Sequence[str] = METHODS,
        progress=None) -> List[Dict]:
    """One row per (scene, box): median ms per method (interleaved rounds) and agreement with float64."""
    rows = []
    for scene in scenes:
        verts, field, segm = make_scene(scene, num_vertices)
        index = vs.VertexIndex(verts)
        if index.uses_tree:
            index.nearest_by_tree(verts[:1])  # build the tree once, as a converter's first box does
        vv = index.norms
        chunk = max(1, vs._CHUNK_ELEMENTS // len(verts))
        for h, w in boxes:
            emb, pixels, fg = _box_pixels(field, segm, h, w)
            calls = {
                "detectron2": lambda: _detectron2_dense(pixels, verts),
                "dense": lambda: vs._nearest_dense(pixels, verts, vv, chunk),
                "pruned": lambda: vs._nearest_in_box(emb, fg, verts, chunk)[fg],
                "search": lambda: vs.closest_vertices(field, segm, (0, 0, w, h), index)[fg],
            }
            times: Dict[str, List[float]] = {m: [] for m in methods}
            results = {}
            for _ in range(rounds):
                for m in methods:
                    t0 = time.perf_counter()
                    results[m] = calls[m]()
                    times[m].append((time.perf_counter() - t0) * 1e3)
            exact = torch.cat([torch.cdist(p, verts.double()).argmin(1) for p in pixels.double().split(1024)])
            row = {"scene": scene, "box": f"{h}x{w}", "body_pixels": int(fg.sum()),
                   "vertex_dimension": index.dimension, "search_path": "tree" if index.tree_pays(pixels) else "tiles"}
            for m in methods:
                row[f"{m}_ms"] = statistics.median(times[m])
                row[f"{m}_agree"] = float((results[m] == exact).float().mean())
            rows.append(row)
            if progress:
                progress(row)
    return rows


def format_table(rows: List[Dict], methods: Sequence[str] = METHODS) -> str:
    head = "| scene | box (HxW) | body px | " + " | ".join(f"{m} ms" for m in methods)
    head += " | search path | search vs detectron2 | agreement with float64 (" + " / ".join(methods) + ") |"
    lines = [head, "|" + "---|" * (len(methods) + 6)]
    for r in rows:
        speed = r["detectron2_ms"] / r["search_ms"] if "detectron2_ms" in r and "search_ms" in r else float("nan")
        lines.append(f"| {r['scene']} | {r['box']} | {r['body_pixels']} | "
                     + " | ".join(f"{r[m + '_ms']:.1f}" for m in methods)
                     + f" | {r['search_path']} (dim {r['vertex_dimension']:.1f}) | {speed:.1f}x | "
                     + " / ".join(f"{r[m + '_agree']:.4f}" for m in methods) + " |")
    return "\n".join(lines)
