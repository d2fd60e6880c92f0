"""`dp_contour`: iso-lines of U and V inside each body part (numpy + OpenCV, no matplotlib).

U (and V) is cut into `levels` equal bins; a pixel lies on an iso-line where its bin differs from its
right or lower neighbour that belongs to the same part (the pixel with the higher bin is drawn, so
lines are one pixel wide). Lines take the colormap colour of their level and are drawn opaque
(`alpha` < 1 blends them), only inside the person's foreground; part borders get no line.
"""
import cv2
import numpy as np

from .base import PersonRegion, Visualizer, blend_masked, colorize, person_regions


def iso_lines(values: np.ndarray, labels: np.ndarray, levels: int):
    """(line mask [h, w] bool, level index [h, w] int) of the iso-lines of `values` in [0, 1]."""
    q = np.minimum((values * levels).astype(np.int64), levels - 1)
    fg = labels > 0
    line = np.zeros(values.shape, dtype=bool)
    level = np.zeros(values.shape, dtype=np.int64)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        same = (labels[a] == labels[b]) & fg[a] & fg[b]
        up = same & (q[b] > q[a])  # the b pixel has the higher bin
        down = same & (q[a] > q[b])
        line[b] |= up
        level[b] = np.where(up, np.maximum(level[b], q[b]), level[b])
        line[a] |= down
        level[a] = np.where(down, np.maximum(level[a], q[a]), level[a])
    return line, level


class ContourVisualizer(Visualizer):
    def __init__(self, levels: int = 10, thickness: int = 1, alpha: float = 1.0, cmap: int = cv2.COLORMAP_PARULA):
        if levels < 2:
            raise ValueError("levels must be >= 2")
        self.levels = int(levels)
        self.thickness = int(thickness)
        self.alpha = float(alpha)
        self.cmap = cmap

    def _draw_field(self, image: np.ndarray, region: PersonRegion, values: np.ndarray) -> None:
        line, level = iso_lines(values, region.labels, self.levels)
        if self.thickness > 1:
            kernel = np.ones((self.thickness, self.thickness), np.uint8)
            line8 = cv2.dilate(line.astype(np.uint8), kernel)
            level = cv2.dilate(level.astype(np.uint8), kernel).astype(np.int64)
            line = (line8 > 0) & region.foreground
        colors = colorize(level * (255.0 / self.levels), self.cmap)
        blend_masked(image, region, colors, line, self.alpha)

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        for region in person_regions(image.shape, boxes_xyxy, results):
            self._draw_field(image, region, region.u)
            self._draw_field(image, region, region.v)
