"""Per-person chart results <-> the original DensePose (Detectron1) IUV / INDS images.

`compose_iuv_image` reproduces what Detectron1's `tools/infer_simple.py` -> `vis_one_image` wrote as
`<name>_IUV.png` and `<name>_INDS.png`, quirks included:

* persons are visited in ASCENDING score order (a stable sort here; Detectron1's `np.argsort` did not
  promise an order for equal scores);
* each person's (H, W) result is placed with its top-left corner at the integer (truncated) box
  corner (`int(x0)`, `int(y0)`); parts falling outside the image are cropped (Detectron1 crashed);
* in the float canvas a channel of a pixel is only written where it is still exactly 0, so on
  overlaps the person visited FIRST (the lower score) wins, and this is decided per channel;
* after all persons: U and V are multiplied by 255, values above 255 clipped to 255, and the array
  cast to uint8 (truncation, not rounding);
* INDS holds, where a person's part label is > 0 and INDS is still 0, the person's RANK in that
  ascending order (counting ALL given persons, also those below `score_threshold`, which are
  skipped). So the lowest-ranked person writes 0 and is invisible in INDS (and a later person may
  then claim its pixels in INDS). `index_offset=1` makes every person visible;
* the arrays are written with `cv2.imwrite`, so IUV channel 0 (I) lands in the PNG's BLUE channel and
  reading the file back with `cv2.imread` gives channel 0 = I, 1 = U, 2 = V again.

`parse_iuv_image` goes the other way: one person per non-zero INDS value (plus one person of rank 0
for labelled pixels with INDS 0, if any), its box the tight box of its pixels, labels and U, V = U8 / 255
masked to its pixels, and its "score" the INDS value. Composing those again with
`score_threshold=0, person_inds=ranks` (or, when the ranks are contiguous, `index_offset=min(ranks)`)
reproduces both images bit-identically.
"""
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..structures import DensePoseChartResult

# Detectron1's tools/infer_simple.py called vis_one_image(..., thresh=0.7)
DETECTRON1_VIS_THRESH = 0.7


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def compose_iuv_image(
    boxes_xyxy,
    scores,
    results: Sequence[DensePoseChartResult],
    image_hw: Tuple[int, int],
    score_threshold: float = DETECTRON1_VIS_THRESH,
    index_offset: int = 0,
    person_inds: Optional[Sequence[int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """IUV (uint8 [H, W, 3]: I, U*255, V*255) and INDS (uint8 [H, W]) images of one picture.

    boxes_xyxy: (N, 4) boxes in image pixels; scores: (N,); results: N per-person chart results, each
    over its box (`DensePoseChartResult`); image_hw: (height, width) of the picture.
    score_threshold: persons with a lower score are skipped (but still counted in the ranks).
    index_offset: added to every rank written to INDS (0 = Detectron1, where the lowest rank is 0).
    person_inds: explicit INDS value per person (input order), replacing `rank + index_offset`.
    INDS values above 255 saturate at 255 (Detectron1 overflowed).
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    boxes = _as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    scores_np = _as_numpy(scores).astype(np.float64).reshape(-1)
    if not (len(boxes) == len(scores_np) == len(results)):
        raise ValueError(f"{len(boxes)} boxes, {len(scores_np)} scores and {len(results)} results")
    if person_inds is not None and len(person_inds) != len(results):
        raise ValueError(f"{len(person_inds)} person_inds for {len(results)} results")
    coords = np.zeros((height, width, 3), dtype=np.float64)
    all_inds = np.zeros((height, width), dtype=np.float64)
    order = np.argsort(scores_np, kind="stable")
    for rank, k in enumerate(order):
        if scores_np[k] < score_threshold:
            continue
        if getattr(results[k], "labels", None) is None:
            raise ValueError(f"IUV images need chart results (I, U, V); person {k} has none (a CSE result of a "
                             f"mesh without charts: {getattr(results[k], 'mesh_name', '?')})")
        labels = _as_numpy(results[k].labels).astype(np.float64)
        uv = _as_numpy(results[k].uv).astype(np.float64)
        h, w = labels.shape
        x0, y0 = int(boxes[k, 0]), int(boxes[k, 1])  # truncation, as `entry.astype(int)`
        # crop to the image
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, height), min(x0 + w, width)
        if ye <= ys or xe <= xs:
            continue
        sl = (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
        out = np.stack([labels[sl], uv[0][sl], uv[1][sl]], axis=-1)
        region = coords[ys:ye, xs:xe]
        empty = region == 0
        region[empty] = out[empty]
        value = float(person_inds[k]) if person_inds is not None else float(rank + index_offset)
        current = (labels[sl] > 0).astype(np.float64) * value
        inds_region = all_inds[ys:ye, xs:xe]
        empty = inds_region == 0
        inds_region[empty] = current[empty]
    coords[:, :, 1:3] = 255.0 * coords[:, :, 1:3]
    iuv = np.clip(coords, 0, 255).astype(np.uint8)
    inds = np.clip(all_inds, 0, 255).astype(np.uint8)
    return iuv, inds


def parse_iuv_image(
    iuv: np.ndarray, inds: np.ndarray
) -> Tuple[torch.Tensor, torch.Tensor, List[DensePoseChartResult]]:
    """IUV (uint8 [H, W, 3] as read by `cv2.imread`) + INDS (uint8 [H, W]) -> per-person results.

    Returns boxes (N, 4) float32 XYXY (tight integer boxes: x1, y1 exclusive), ranks (N,) float32 (the
    INDS values, usable as scores: ascending rank = Detectron1's visiting order) and N results, in
    ascending rank order. Pixels labelled in IUV but 0 in INDS form one extra person of rank 0 (the
    lowest-ranked person of the original picture, invisible in INDS by Detectron1's convention).
    """
    iuv = np.asarray(iuv)
    inds = np.asarray(inds)
    if iuv.ndim != 3 or iuv.shape[2] < 3:
        raise ValueError(f"IUV image must be H x W x 3, got shape {iuv.shape}")
    if inds.ndim == 3:  # an INDS png saved as 3 equal channels
        inds = inds[:, :, 0]
    if inds.shape != iuv.shape[:2]:
        raise ValueError(f"INDS shape {inds.shape} does not match IUV shape {iuv.shape[:2]}")
    labels_all = iuv[:, :, 0]
    values = [int(v) for v in np.unique(inds) if v != 0]
    owners = []
    if np.any((inds == 0) & (labels_all > 0)):
        owners.append((0, (inds == 0) & (labels_all > 0)))
    owners += [(v, inds == v) for v in values]
    boxes, ranks, results = [], [], []
    for value, mask in owners:
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        m = mask[y0:y1, x0:x1]
        labels = np.where(m, labels_all[y0:y1, x0:x1], 0).astype(np.int64)
        uv = np.where(m[None], iuv[y0:y1, x0:x1, 1:3].transpose(2, 0, 1), 0).astype(np.float32) / 255.0
        boxes.append([x0, y0, x1, y1])
        ranks.append(value)
        results.append(DensePoseChartResult(labels=torch.from_numpy(labels), uv=torch.from_numpy(uv)))
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return boxes_t, torch.tensor(ranks, dtype=torch.float32), results


def iuv_file_names(image_name: str) -> Tuple[str, str]:
    """`<stem>_IUV.png`, `<stem>_INDS.png` for an image path (stem = base name without extension)."""
    stem = os.path.splitext(os.path.basename(image_name))[0]
    return f"{stem}_IUV.png", f"{stem}_INDS.png"


def write_iuv_images(out_dir: str, image_name: str, iuv: np.ndarray, inds: np.ndarray) -> Tuple[str, str]:
    """Write the pair with `cv2.imwrite` (I in the PNG's blue channel, as Detectron1); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    iuv_name, inds_name = iuv_file_names(image_name)
    iuv_path, inds_path = os.path.join(out_dir, iuv_name), os.path.join(out_dir, inds_name)
    if not cv2.imwrite(iuv_path, iuv):
        raise OSError(f"could not write {iuv_path}")
    if not cv2.imwrite(inds_path, inds):
        raise OSError(f"could not write {inds_path}")
    return iuv_path, inds_path


def read_iuv_images(iuv_path: str, inds_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read an `_IUV.png` / `_INDS.png` pair as written by Detectron1 or `write_iuv_images`."""
    iuv = cv2.imread(iuv_path, cv2.IMREAD_COLOR)
    if iuv is None:
        raise OSError(f"cannot read IUV image {iuv_path}")
    inds = cv2.imread(inds_path, cv2.IMREAD_GRAYSCALE)
    if inds is None:
        raise OSError(f"cannot read INDS image {inds_path}")
    return iuv, inds
