"""`dp_iuv_texture`: texture transfer from a DensePose texture atlas (Detectron1 notebook
`DensePose-RCNN-Texture-Transfer.ipynb`, e.g. DensePoseData/demo_data/texture_from_SURREAL.png).

Atlas layout: 6N rows x 4N columns of N x N tiles (N = 200 for the SURREAL atlas); part p (1..24) is the
tile in column (p - 1) // 6 and row (p - 1) % 6 (the parts run down the first column, then the next).
Within a tile U grows along x and V grows upwards: like the notebook, which works on the 8-bit IUV
image, U8 = trunc(255 * U), V8 = trunc(255 * V) and the texel is
    tile[trunc((255 - V8) * (N - 1) / 255), trunc(U8 * (N - 1) / 255)].
Colours stay BGR end to end (the atlas is read with OpenCV). Texels that are black (or transparent in
an atlas with an alpha channel) leave the picture as it is, as the notebook's `BG_MASK` does.
"""
from typing import Optional

import cv2
import numpy as np

from .base import N_PART_LABELS, Visualizer, blend_masked, person_regions

TILE_ROWS, TILE_COLS = 6, 4


def load_texture_atlas(path: str) -> np.ndarray:
    """The atlas as BGR (or BGRA) uint8; raises ValueError with the file name if unusable."""
    atlas = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if atlas is None:
        raise ValueError(f"cannot read texture atlas {path}")
    if atlas.ndim == 2:
        atlas = cv2.cvtColor(atlas, cv2.COLOR_GRAY2BGR)
    if atlas.dtype != np.uint8:
        atlas = (atlas / (np.iinfo(atlas.dtype).max / 255.0)).astype(np.uint8)
    check_atlas(atlas, path)
    return atlas


def check_atlas(atlas: np.ndarray, name: str = "texture atlas") -> int:
    h, w = atlas.shape[:2]
    if h % TILE_ROWS or w % TILE_COLS or h // TILE_ROWS != w // TILE_COLS:
        raise ValueError(
            f"{name}: size {w}x{h} is not a 4 x 6 grid of square tiles (e.g. 800x1200 for 200x200 tiles)"
        )
    return h // TILE_ROWS


class TextureVisualizer(Visualizer):
    def __init__(self, texture_atlas: np.ndarray, alpha: float = 1.0):
        if texture_atlas is None:
            raise ValueError("dp_iuv_texture needs a texture atlas (--texture_atlas FILE)")
        self.tile = check_atlas(texture_atlas)
        self.alpha = float(alpha)
        n = self.tile
        tiles = np.zeros((N_PART_LABELS, n, n, 3), dtype=np.uint8)
        tile_alpha = np.zeros((N_PART_LABELS, n, n), dtype=np.float32)
        for p in range(N_PART_LABELS):
            col, row = p // TILE_ROWS, p % TILE_ROWS
            t = texture_atlas[row * n : (row + 1) * n, col * n : (col + 1) * n]
            tiles[p] = t[:, :, :3]
            if t.shape[2] == 4:
                tile_alpha[p] = t[:, :, 3] / 255.0
            else:
                tile_alpha[p] = (t[:, :, :3].astype(np.int64).sum(axis=-1) > 0).astype(np.float32)
        self.tiles, self.tile_alpha = tiles, tile_alpha

    def texels(self, labels: np.ndarray, u: np.ndarray, v: np.ndarray):
        """(BGR [h, w, 3], alpha [h, w]) looked up for every pixel (background: alpha 0)."""
        n1 = self.tile - 1
        u8 = np.clip(u * 255.0, 0, 255).astype(np.int64)
        v8 = np.clip(v * 255.0, 0, 255).astype(np.int64)
        cols = (u8 * n1 / 255.0).astype(np.int64)
        rows = ((255 - v8) * n1 / 255.0).astype(np.int64)
        parts = np.clip(labels, 1, N_PART_LABELS) - 1
        colors = self.tiles[parts, rows, cols]
        alpha = self.tile_alpha[parts, rows, cols] * (labels > 0)
        return colors, alpha

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        for region in person_regions(image.shape, boxes_xyxy, results):
            colors, alpha = self.texels(region.labels, region.u, region.v)
            blend_masked(image, region, colors, alpha > 0, alpha * self.alpha)
