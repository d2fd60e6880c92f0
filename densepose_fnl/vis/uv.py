"""`dp_u` / `dp_v`: the chart coordinate U or V (0..1) through a colormap, blended inside the foreground."""
import cv2

from .base import MaskedColormapVisualizer


class UVisualizer(MaskedColormapVisualizer):
    def __init__(self, alpha: float = 0.7, cmap: int = cv2.COLORMAP_PARULA):
        super().__init__(alpha, cmap)

    def values(self, region):
        return region.u * 255.0


class VVisualizer(MaskedColormapVisualizer):
    def __init__(self, alpha: float = 0.7, cmap: int = cv2.COLORMAP_PARULA):
        super().__init__(alpha, cmap)

    def values(self, region):
        return region.v * 255.0
