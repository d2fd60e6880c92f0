"""`dp_segm`: the fine part index I (1..24) through a colormap, blended inside the foreground."""
import cv2

from .base import N_PART_LABELS, MaskedColormapVisualizer


class FineSegmentationVisualizer(MaskedColormapVisualizer):
    def __init__(self, alpha: float = 0.7, cmap: int = cv2.COLORMAP_PARULA):
        super().__init__(alpha, cmap)

    def values(self, region):
        return region.labels * (255.0 / N_PART_LABELS)
