"""`dp_uv_confidence`: the UV uncertainty of chart-confidence models (WC1 / WC2 / WC1M / WC2M) as a heat map
over each person, with a colour bar (numpy + OpenCV, no matplotlib; detectron2 has no such visualiser).

Per foreground pixel the model's Gaussian UV error model (Neverova et al., NeurIPS 2019) gives the
covariance s I (iid_iso) or s I + r r^T (indep_aniso), with s = softplus(sigma_2) + UV_CONFIDENCE.EPSILON
and r = (kappa_u, kappa_v). Drawn is the standard deviation per axis, sqrt(trace / 2) =
sqrt(s + |r|^2 / 2) (just sqrt(s) for iid_iso), in chart units (U, V in [0, 1]): blue = confident,
red = uncertain. The colour scale is shared by all persons of the picture, from the smallest to the
largest sigma drawn (or `vmin` / `vmax` when given), and is shown as a bar with its end values at the
right edge of the picture (the picture keeps its size, so it combines with every other visualiser).
Persons without UV confidences (plain models) are left as they are.
"""
import logging
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .base import PersonRegion, Visualizer, as_numpy, blend_masked, colorize, person_regions

logger = logging.getLogger(__name__)


def uv_sigma_map(result, epsilon: float = 0.01) -> Optional[np.ndarray]:
    """[h, w] float32 per-axis UV standard deviation of one person's result (NaN on the background), or None
    if the result carries no UV confidence."""
    raw = getattr(result, "sigma_2", None)
    if raw is None:
        return None
    var = F.softplus(torch.as_tensor(raw).float()) + float(epsilon)
    ku, kv = getattr(result, "kappa_u", None), getattr(result, "kappa_v", None)
    if ku is not None and kv is not None:
        var = var + (torch.as_tensor(ku).float() ** 2 + torch.as_tensor(kv).float() ** 2) / 2
    sigma = torch.sqrt(var).numpy().astype(np.float32)
    sigma[as_numpy(result.labels) <= 0] = np.nan
    return sigma


class UVConfidenceVisualizer(Visualizer):
    def __init__(self, alpha: float = 0.75, cmap: int = cv2.COLORMAP_TURBO, epsilon: float = 0.01,
                 vmin: Optional[float] = None, vmax: Optional[float] = None, colorbar: bool = True):
        self.alpha = float(alpha)
        self.cmap = cmap
        self.epsilon = float(epsilon)
        self.vmin, self.vmax = vmin, vmax
        self.colorbar = bool(colorbar)

    def _regions(self, image, boxes_xyxy, results) -> List[Tuple[PersonRegion, np.ndarray]]:
        boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
        out = []
        for region in person_regions(image.shape, boxes_xyxy, results):
            sigma = uv_sigma_map(results[region.index], self.epsilon)
            if sigma is None:
                continue
            x0, y0 = int(boxes[region.index, 0]), int(boxes[region.index, 1])
            crop = sigma[region.ys.start - y0:region.ys.stop - y0, region.xs.start - x0:region.xs.stop - x0]
            out.append((region, crop))
        return out

    def draw(self, image, boxes_xyxy, results, scores) -> None:
        regions = self._regions(image, boxes_xyxy, results)
        drawn = [s[r.foreground] for r, s in regions if r.foreground.any()]
        if not drawn:
            if results and not any(getattr(r, "sigma_2", None) is not None for r in results):
                logger.warning("dp_uv_confidence: the results carry no UV confidence (a model without "
                               "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE); nothing drawn")
            return
        values = np.concatenate(drawn)
        lo = float(values.min()) if self.vmin is None else float(self.vmin)
        hi = float(values.max()) if self.vmax is None else float(self.vmax)
        if hi <= lo:
            hi = lo + 1e-6
        for region, sigma in regions:
            scaled = np.nan_to_num((sigma - lo) / (hi - lo), nan=0.0) * 255.0
            blend_masked(image, region, colorize(scaled, self.cmap), region.foreground, self.alpha)
        if self.colorbar:
            draw_colorbar(image, lo, hi, self.cmap)


def draw_colorbar(image: np.ndarray, lo: float, hi: float, cmap: int, title: str = "UV sigma") -> None:
    """In place: a vertical colour bar (high at the top) with its end values, at the right edge of `image`."""
    h, w = image.shape[:2]
    bar_h = max(int(h * 0.4), 16)
    bar_w = max(min(w // 40, 16), 6)
    scale = max(min(h, w) / 900.0, 0.35)
    font = cv2.FONT_HERSHEY_SIMPLEX
    labels = [f"{hi:.3f}", f"{lo:.3f}", title]
    text_w = max(cv2.getTextSize(t, font, scale, 1)[0][0] for t in labels)
    text_h = cv2.getTextSize("0", font, scale, 1)[0][1]
    pad = max(int(6 * scale / 0.35), 3)
    panel_w = bar_w + text_w + 3 * pad
    panel_h = bar_h + 3 * pad + 2 * text_h
    x1, y0 = w - 1, max((h - panel_h) // 2, 0)
    x0 = max(x1 - panel_w, 0)
    y1 = min(y0 + panel_h, h - 1)
    panel = image[y0:y1, x0:x1]
    panel[:] = (panel.astype(np.float32) * 0.35).astype(np.uint8)  # darkened backdrop
    bx0, by0 = x0 + pad, y0 + 2 * pad + text_h
    by1 = min(by0 + bar_h, h - 1)
    ramp = np.linspace(255, 0, by1 - by0)[:, None].repeat(bar_w, axis=1)
    image[by0:by1, bx0:bx0 + bar_w] = colorize(ramp, cmap)[:, :image[by0:by1, bx0:bx0 + bar_w].shape[1]]
    white = (255, 255, 255)
    tx = bx0 + bar_w + pad
    cv2.putText(image, labels[2], (x0 + pad, y0 + pad + text_h), font, scale, white, 1, cv2.LINE_AA)
    cv2.putText(image, labels[0], (tx, by0 + text_h), font, scale, white, 1, cv2.LINE_AA)
    cv2.putText(image, labels[1], (tx, by1), font, scale, white, 1, cv2.LINE_AA)
