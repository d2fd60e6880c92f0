"""Continuous surface embeddings -> mesh vertices: the nearest vertex embedding of each pixel.

One implementation for evaluation (at the ground-truth points) and inference (every pixel of the box),
with the resampling and masking of detectron2's CSE evaluation (``DensePoseCocoEval
.computeOgps_single_pair_cse`` / ``findClosestVertsCse``): the embedding and the coarse segmentation are
resized bilinearly (align_corners False) to the integer box size, the pixel -> vertex distance is
``squared_euclidean_distance_matrix`` (-2 p.v + |p|^2 + |v|^2, the same arithmetic, so the same argmin),
and pixels whose coarse label is background get -1. Distances are computed in chunks of pixels, so the
(pixels x vertices) matrix never exists whole: ~64 MB per chunk for the 27,554 SMPL vertices.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["closest_vertices", "squared_euclidean_distance_matrix"]

_CHUNK_ELEMENTS = 1 << 24  # pixels x vertices per distance chunk (float32: 64 MB)


def squared_euclidean_distance_matrix(pts1: torch.Tensor, pts2: torch.Tensor) -> torch.Tensor:
    """(M, N) squared distances between rows of pts1 (M, D) and pts2 (N, D) (detectron2's formula)."""
    edm = torch.mm(-2 * pts1, pts2.t())
    edm += (pts1 * pts1).sum(1, keepdim=True) + (pts2 * pts2).sum(1, keepdim=True).t()
    return edm.contiguous()


def _nearest(pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor, chunk: int) -> torch.Tensor:
    out = torch.empty(len(pixel_embeddings), dtype=torch.long, device=pixel_embeddings.device)
    for s in range(0, len(pixel_embeddings), chunk):
        edm = squared_euclidean_distance_matrix(pixel_embeddings[s : s + chunk], vertex_embeddings)
        out[s : s + chunk] = edm.argmin(dim=1)
    return out


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
        chunk_size: pixels per distance chunk (default: 2^24 / V).
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
    labels = F.interpolate(coarse_segm.unsqueeze(0), (h, w), mode="bilinear", align_corners=False).argmax(dim=1)[0]
    emb = F.interpolate(embedding.unsqueeze(0), (h, w), mode="bilinear", align_corners=False)[0]
    if points is not None:
        py = torch.as_tensor(points[0], dtype=torch.long, device=device).reshape(-1)
        px = torch.as_tensor(points[1], dtype=torch.long, device=device).reshape(-1)
        out = _nearest(emb[:, py, px].t(), vertex_embeddings, chunk)
        out[labels[py, px] <= 0] = -1
        return out
    out = torch.full((h, w), -1, dtype=torch.long, device=device)
    fg = labels > 0
    if fg.any():
        out[fg] = _nearest(emb.permute(1, 2, 0)[fg], vertex_embeddings, chunk)
    return out
