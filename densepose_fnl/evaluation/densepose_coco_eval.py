"""DensePose AP (GPS, GPSm, IOU) by the official COCO-DensePose protocol, and box AP.

Re-implementation of the protocol of detectron2's ``DensePoseCocoEval`` (iouType "densepose", data mode
IUV_DT), computing the same numbers:

* ground truth: ``ignore`` = the annotation has no ``dp_x``; annotations and detections overlapping an
  image's ignore regions are dropped (boxes: > 70 % of the box covered; detections: IoU of the predicted
  body mask with the region >= 0.9); crowd flags are used in matching and box IoU;
* GPS of a (detection, GT) pair: GT points mapped from the 256 box frame (``dp * w / 255 + x``, minus the
  detection box corner, truncated), points outside the truncated detection box score 0, the prediction is
  read at those pixels (uint8 I, U/255, V/255), both sides mapped to the nearest vertex of their part in UV,
  geodesic distance from the official table, ``exp(-d^2 / (2 k^2))`` with the per-part normalisers, mean;
* mask IoU between the predicted body mask (I > 0) and the GT mask (the 14 ``dp_masks`` zoomed to the box,
  or the polygons when absent); GPSm = sqrt(IoU * GPS);
* matching per threshold 0.50:0.05:0.95 as in COCO, at most 20 detections per image, with the official
  extras (images whose GT are all ignored ignore their detections; unmatched detections with box IoU >= 0.8
  to an ignored GT are ignored); area ranges all / medium / large.

CSE (continuous surface embeddings; detectron2's ``computeOgps_single_pair_cse``): the prediction's closest
vertex at each GT point (``postprocess.cse.closest_vertices``: embedding and coarse segmentation resized to
the integer box, nearest vertex embedding, -1 on background or outside the box), the GT vertex
``dp_vertex`` of mesh ``ref_model``, the distance from the mesh's geodesic table (inf when either side has
no vertex), normalised per part (official means of the coarse part of ``dp_I``) for ``smpl_27554``
annotations with ``dp_I``, else by 0.255. CSE detections are filtered by ignore regions with the box rule
(the official evaluator applies the mask rule only to chart results), and their body mask for GPSm / IOU is
the resized coarse segmentation's argmax > 0.

Memory: detections keep their IUV PNG-compressed and are decoded one image at a time; CSE detections keep,
instead of their float embedding, only what scoring reads: the matched vertex at every GT point of their
image (``cse_vertices``: {gt id: int32 array}) and their body mask as RLE (``cse_mask``), computed when the
detection is recorded (``cse_detection_data``). Everything per image is computed once and shared by the
three modes.
"""
import contextlib
import io
import logging
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.ndimage import zoom

from .eval_data import COARSE_PARTS, MEAN_DISTANCES, GeodesicEvalData
from .results_format import decode_iuv, decode_png

logger = logging.getLogger(__name__)

MODES = ("GPS", "GPSM", "IOU")
IGNORE_THR_BB = 0.7
IGNORE_THR_UV = 0.9
SMPL_MESH_NAME = "smpl_27554"
CSE_DEFAULT_NORMALISER = 0.255


def densepose_metric_names(min_threshold: float = 0.5) -> List[str]:
    metrics = ["AP"]
    for thr, name in ((0.201, "AP20"), (0.301, "AP30"), (0.401, "AP40")):
        if min_threshold <= thr:
            metrics.append(name)
    return metrics + ["AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


class Params:
    """Official 'densepose' parameters (maxDets 20; areas all / medium / large)."""

    def __init__(self, min_threshold: float = 0.5):
        self.imgIds: List[int] = []
        self.catIds: List[int] = []
        self.iouThrs = np.linspace(
            min_threshold, 0.95, int(np.round((0.95 - min_threshold) / 0.05)) + 1, endpoint=True
        )
        self.recThrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
        self.maxDets = [20]
        self.areaRng = [[0**2, 1e5**2], [32**2, 96**2], [96**2, 1e5**2]]
        self.areaRngLbl = ["all", "medium", "large"]
        self.useCats = 1


class Detection:
    """One detection; its IUV (uint8 (3, H, W)) is kept compressed and decoded on demand."""

    __slots__ = ("image_id", "category_id", "bbox", "score", "id", "area", "_iuv", "_png", "_uv_data", "_uv_shape",
                 "cse_vertices", "cse_mask")

    def __init__(self, entry: Dict[str, Any], det_id: int):
        self.image_id = entry["image_id"]
        self.category_id = entry["category_id"]
        self.bbox = [float(v) for v in entry["bbox"]] if not isinstance(entry["bbox"], list) else entry["bbox"]
        self.score = entry["score"]
        self.id = det_id
        self.area = self.bbox[2] * self.bbox[3]
        self._iuv = entry.get("uv")  # raw uint8 array (3, H, W)
        self._png = entry.get("uv_png")  # PNG bytes
        self._uv_data = entry.get("uv_data")  # base64 PNG text
        self._uv_shape = entry.get("uv_shape")
        vertices = entry.get("cse_vertices")  # {gt id: int array}, json keys may be str
        self.cse_vertices = None if vertices is None else {int(k): np.asarray(v) for k, v in vertices.items()}
        self.cse_mask = entry.get("cse_mask")  # RLE of the box-size body mask

    @property
    def is_cse(self) -> bool:
        return self.cse_vertices is not None

    @property
    def has_densepose(self) -> bool:
        """True for chart results (their ignore-region check uses the predicted mask, as officially)."""
        return self._iuv is not None or self._png is not None or self._uv_data is not None

    def body_mask(self) -> np.ndarray:
        """Box-size labels whose > 0 is the predicted body: I of the IUV, or the CSE mask."""
        if self.is_cse:
            rle = dict(self.cse_mask)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            return mask_utils.decode(rle)
        return self.iuv()[0]

    def iuv(self) -> np.ndarray:
        if self._iuv is not None:
            return np.asarray(self._iuv)
        if self._png is not None:
            return decode_png(self._png, self._uv_shape)
        if self._uv_data is not None:
            return decode_iuv({"uv_data": self._uv_data, "uv_shape": self._uv_shape})
        raise ValueError(f"detection {self.id} (image {self.image_id}) has no DensePose data")


def _ignore_region(img: Dict[str, Any]) -> Optional[np.ndarray]:
    if "ignore_regions_x" not in img or len(img["ignore_regions_x"]) == 0:
        return None
    polys = [
        [v for xy in zip(xs, ys) for v in xy] for xs, ys in zip(img["ignore_regions_x"], img["ignore_regions_y"])
    ]
    rles = mask_utils.frPyObjects(polys, img["height"], img["width"])
    return mask_utils.decode(mask_utils.merge(rles))


def _keep(bbox, iregion: Optional[np.ndarray], mask_fn: Optional[Callable[[], np.ndarray]]) -> bool:
    """Official _checkIgnore: True when the annotation / detection is kept."""
    if iregion is None:
        return True
    bb = np.array(bbox).astype(int)
    x1, y1, x2, y2 = bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]
    x2 = min([x2, iregion.shape[1]])
    y2 = min([y2, iregion.shape[0]])
    if bb[2] * bb[3] == 0:
        return False
    crop = iregion[y1:y2, x1:x2]
    if crop.sum() == 0:
        return True
    if mask_fn is None:  # boxes
        return crop.sum() / bb[2] / bb[3] < IGNORE_THR_BB
    ignoremask = np.require(crop, requirements=["F"])
    uvmask = np.require(np.asarray(mask_fn() > 0), dtype=np.uint8, requirements=["F"])
    uviou = mask_utils.iou([mask_utils.encode(uvmask)], [mask_utils.encode(ignoremask)], [1])[0]
    return uviou < IGNORE_THR_UV


def _rle_on_image(mask: Optional[np.ndarray], bbox, im_h: int, im_w: int):
    x, y, w, h = np.array(bbox)
    im_mask = np.zeros((im_h, im_w), dtype=np.uint8)
    if mask is not None:
        x0 = max(int(x), 0)
        x1 = min(int(x + w), im_w, int(x) + mask.shape[1])
        y0 = max(int(y), 0)
        y1 = min(int(y + h), im_h, int(y) + mask.shape[0])
        y, x = int(y), int(x)
        im_mask[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    im_mask = np.require(np.asarray(im_mask > 0), dtype=np.uint8, requirements=["F"])
    return mask_utils.encode(np.array(im_mask[:, :, np.newaxis], order="F"))[0]


def densepose_gt_mask(dp_masks: Sequence[Any]) -> np.ndarray:
    """The 14 coarse-part RLEs (256 x 256) -> label map 0..14 (official getDensePoseMask)."""
    out = np.zeros([256, 256])
    for i in range(1, min(len(dp_masks) + 1, 15)):
        if dp_masks[i - 1]:
            out[mask_utils.decode(dp_masks[i - 1]) > 0] = i
    return out


def _gt_rle(g: Dict[str, Any], im_h: int, im_w: int):
    if "dp_masks" in g:
        mask = np.minimum(densepose_gt_mask(g["dp_masks"]), 1.0)
        _, _, w, h = g["bbox"]
        scale_x = float(max(w, 1)) / mask.shape[1]
        scale_y = float(max(h, 1)) / mask.shape[0]
        mask = zoom(mask, (scale_y, scale_x), order=1, prefilter=False)
        mask = np.array(mask > 0.5, dtype=np.uint8)
        return _rle_on_image(mask, g["bbox"], im_h, im_w)
    segm = g.get("segmentation")
    if isinstance(segm, list) and segm:
        return mask_utils.merge(mask_utils.frPyObjects(segm, im_h, im_w))
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            return mask_utils.frPyObjects(segm, im_h, im_w)
        return segm
    return _rle_on_image(None, g["bbox"], im_h, im_w)


def gt_point_pixels(gt: Dict[str, Any], bbox: Sequence[float]):
    """Official mapping of a GT's points into a detection box: (py, px, pts) with pts -1 where the point
    falls outside the integer box (py, px then 0 there)."""
    g_ = gt["bbox"]
    dy = int(bbox[3])
    dx = int(bbox[2])
    dp_x = np.array(gt["dp_x"]) * g_[2] / 255.0
    dp_y = np.array(gt["dp_y"]) * g_[3] / 255.0
    py = (dp_y + g_[1] - bbox[1]).astype(int)
    px = (dp_x + g_[0] - bbox[0]).astype(int)
    pts = np.zeros(len(px))
    pts[px >= dx] = -1
    pts[py >= dy] = -1
    pts[px < 0] = -1
    pts[py < 0] = -1
    return py, px, pts


def cse_detection_data(
    coarse_segm, embedding, bbox: Sequence[float], gts: Sequence[Dict[str, Any]],
    vertex_embeddings: Callable[[str], Any],
) -> Dict[str, Any]:
    """What CSE scoring needs of one detection, instead of its float embedding: ``cse_vertices`` {gt id:
    int32 (P,) closest vertex at each point of that GT (-1: outside the box or background)} for the GTs
    with CSE points, and ``cse_mask``: RLE of the box-size body mask (resized coarse segmentation argmax > 0).
    vertex_embeddings(mesh name) -> (V, D) tensor (the model's embedder)."""
    import torch

    from ..postprocess.cse import resample_to_box, vertices_at_points

    coarse_segm = torch.as_tensor(coarse_segm, dtype=torch.float32)
    embedding = torch.as_tensor(embedding, dtype=torch.float32)
    h, w = max(int(bbox[3]), 1), max(int(bbox[2]), 1)
    emb, labels = resample_to_box(embedding, coarse_segm, h, w)  # once per detection, for all its GTs
    mask = np.asfortranarray((labels > 0).numpy().astype(np.uint8))
    vertices = {}
    for gt in gts:
        if "dp_x" not in gt or "dp_vertex" not in gt:
            continue
        py, px, pts = gt_point_pixels(gt, bbox)
        if len(pts) < 1 or np.max(pts) == -1:
            continue
        valid = pts > -1
        out = np.full(len(pts), -1, dtype=np.int32)
        out[valid] = vertices_at_points(emb, labels, (py[valid], px[valid]),
                                        torch.as_tensor(vertex_embeddings(gt["ref_model"]))).numpy()
        vertices[int(gt["id"])] = out
    return {"cse_vertices": vertices, "cse_mask": mask_utils.encode(mask)}


def cse_part_normalisers(gt: Dict[str, Any]):
    """Official CSE normalisers: per-point coarse-part means for SMPL GT with dp_I, else 0.255."""
    if gt["ref_model"] == SMPL_MESH_NAME and "dp_I" in gt:
        return MEAN_DISTANCES[COARSE_PARTS[np.array(gt["dp_I"], dtype=int)]]
    return CSE_DEFAULT_NORMALISER


def _default_mesh_geodists(mesh_name: str):
    from ..structures.mesh import create_mesh

    return create_mesh(mesh_name, "cpu").geodists


class DensePoseCocoEval:
    """Official DensePose evaluation of ``detections`` (challenge-format dicts, or dicts with a raw ``uv``
    array or ``uv_png`` bytes) against a COCO-DensePose ground truth: detectron2's ``DensePoseCocoEval``
    (the scoring, as pycocotools' COCOeval); ``evaluator.DensePoseCOCOEvaluator`` is the dataset evaluator
    that collects a model's outputs and calls it."""

    def __init__(
        self,
        coco_gt: COCO,
        detections: Sequence[Dict[str, Any]],
        geodesics: Optional[GeodesicEvalData],
        min_threshold: float = 0.5,
        img_ids: Optional[Sequence[int]] = None,
        vertex_embeddings: Optional[Callable[[str], Any]] = None,
        mesh_geodists: Callable[[str], Any] = _default_mesh_geodists,
    ):
        """geodesics: the chart eval data (None for CSE-only results). CSE results are either recorded
        (``cse_vertices`` / ``cse_mask``, see ``cse_detection_data``) or raw (``coarse_segm`` (C, S, S) and
        ``embedding`` (D, S, S) tensors, detectron2's) with ``vertex_embeddings(mesh name) -> (V, D)``;
        mesh_geodists(mesh name) -> the mesh's geodesic table (default: the catalog mesh's)."""
        self.coco_gt = coco_gt
        self.geodesics = geodesics
        self.mesh_geodists = mesh_geodists
        self.min_threshold = min_threshold
        p = Params(min_threshold)
        p.imgIds = list(np.unique(img_ids if img_ids is not None else sorted(coco_gt.getImgIds())))
        p.catIds = list(np.unique(sorted(coco_gt.getCatIds())))
        self.params = p
        known = set(coco_gt.getImgIds())
        dets = []
        for k, entry in enumerate(detections):  # ids as pycocotools loadRes: position + 1
            if entry["image_id"] not in known:
                raise ValueError(f"result for image {entry['image_id']} which is not in the ground truth")
            if "embedding" in entry and "cse_vertices" not in entry:
                if vertex_embeddings is None:
                    raise ValueError("CSE results (embedding, coarse_segm) need vertex_embeddings(mesh name)")
                gts = [g for g in coco_gt.imgToAnns.get(entry["image_id"], [])
                       if g["category_id"] == entry["category_id"]]
                entry = {**{key: v for key, v in entry.items() if key not in ("embedding", "coarse_segm")},
                         **cse_detection_data(entry["coarse_segm"], entry["embedding"], entry["bbox"], gts,
                                              vertex_embeddings)}
            dets.append(Detection(entry, k + 1))
        self.detections = dets
        self.eval_imgs: Dict[str, List[Optional[Dict[str, Any]]]] = {}
        self.eval: Dict[str, Dict[str, np.ndarray]] = {}
        self.stats: Dict[str, np.ndarray] = {}
        self.pair_scores: Dict[Any, Dict[str, Any]] = {}  # (img, cat) -> gps / box iou / mask iou matrices

    # ------------------------------------------------------------------ per-image pair scores
    def _gps_matrix(self, gts, dts, iuv_of, gt_cache) -> np.ndarray:
        ious = np.zeros((len(dts), len(gts)))
        for j, gt in enumerate(gts):
            if "dp_x" not in gt:
                continue
            for i, dt in enumerate(dts):
                py, px, pts = gt_point_pixels(gt, dt.bbox)
                if len(pts) < 1 or np.max(pts) == -1:
                    ious[i, j] = 0.0
                    continue
                if dt.is_cse:
                    dist, norms = self._cse_distances(gt, dt)
                else:
                    px[pts == -1] = 0
                    py[pts == -1] = 0
                    dist, norms = self._chart_distances(gt, dt, py, px, pts, iuv_of(dt), gt_cache)
                values = np.exp(-(dist**2) / (2 * (norms**2)))
                ious[i, j] = np.mean(values) if len(values) > 0 else 0.0
        return ious

    def _chart_distances(self, gt, dt, py, px, pts, iuv, gt_cache):
        geo = self.geodesics
        if geo is None:
            raise ValueError("chart results need the chart eval data (SMPL_subdiv.mat, ..., Pdist_matrix.pkl)")
        dy, dx = int(dt.bbox[3]), int(dt.bbox[2])
        if iuv.shape[1] < dy or iuv.shape[2] < dx:
            raise ValueError(
                f"detection {dt.id} (image {dt.image_id}): DensePose data of size {list(iuv.shape[1:])} "
                f"is smaller than its integer box {[dy, dx]} (bbox {dt.bbox})"
            )
        ipoints = iuv[0, py, px]
        upoints = iuv[1, py, px] / 255.0
        vpoints = iuv[2, py, px] / 255.0
        ipoints[pts == -1] = 0
        if gt["id"] not in gt_cache:
            gt_cache[gt["id"]] = geo.closest_vertices(gt["dp_I"], gt["dp_U"], gt["dp_V"])
        closest_gt, verts_gt = gt_cache[gt["id"]]
        _, verts_dt = geo.closest_vertices(ipoints, upoints, vpoints)
        return geo.geodesic_distances(verts_gt, verts_dt), geo.part_normalisers(closest_gt)

    def _cse_distances(self, gt, dt):
        if "dp_vertex" not in gt:
            raise ValueError(f"GT {gt['id']} (image {gt['image_id']}) has DensePose points but no dp_vertex / "
                             "ref_model: CSE results need CSE ground truth")
        verts_gt = np.asarray(gt["dp_vertex"], dtype=np.int64)
        verts_dt = dt.cse_vertices.get(int(gt["id"]))
        if verts_dt is None:
            raise ValueError(f"CSE detection {dt.id} (image {dt.image_id}) has no vertices for GT {gt['id']}")
        verts_dt = verts_dt.astype(np.int64)
        dist = np.full(len(verts_gt), np.inf, dtype=np.float32)
        sel = (verts_gt >= 0) & (verts_dt >= 0)
        if sel.any():
            dist[sel] = np.asarray(self.mesh_geodists(gt["ref_model"])[verts_gt[sel], verts_dt[sel]], dtype=np.float32)
        return dist, cse_part_normalisers(gt)

    def _mask_ious(self, gts, dts, iuv_of, im_h, im_w):
        gtmasks = [_gt_rle(g, im_h, im_w) for g in gts]
        dtmasks = []
        for d in dts:
            labels = d.body_mask() if d.is_cse else iuv_of(d)[0]
            mask = np.require(np.asarray(labels > 0), dtype=np.uint8, requirements=["F"])
            dtmasks.append(_rle_on_image(mask, d.bbox, im_h, im_w))
        iscrowd = [int(o.get("iscrowd", 0)) for o in gts]
        return mask_utils.iou(dtmasks, gtmasks, iscrowd)

    # ------------------------------------------------------------------ matching (official evaluateImg)
    def _evaluate_img(self, img_id, cat_id, gts, dts, a_rng, max_det, scores, mode):
        p = self.params
        if len(gts) == 0 and len(dts) == 0:
            return None
        g_ignore = [("dp_x" not in g) or (g["area"] < a_rng[0] or g["area"] > a_rng[1]) for g in gts]
        gtind = np.argsort(g_ignore, kind="mergesort")
        gt = [gts[i] for i in gtind]
        dtind = np.argsort([-d.score for d in dts], kind="mergesort")
        dt = [dts[i] for i in dtind[0:max_det]]
        iscrowd = [int(o.get("iscrowd", 0)) for o in gt]
        gps, ioubs, iousM = scores["gps"], scores["box_iou"], scores["mask_iou"]
        if len(gps) > 0:
            gps, ioubs = gps[:, gtind], ioubs[:, gtind]
        if mode != "GPS" and len(iousM) > 0:
            iousM = iousM[:, gtind]
        T, G, D = len(p.iouThrs), len(gt), len(dt)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gtIg = np.array([g_ignore[i] for i in gtind])
        dtIg = np.zeros((T, D))
        if np.all(gtIg):
            dtIg = np.logical_or(dtIg, True)
        tind = T - 1
        if len(gps) > 0:
            for tind, t in enumerate(p.iouThrs):
                for dind, d in enumerate(dt):
                    iou = min([t, 1 - 1e-10])
                    m = -1
                    for gind in range(G):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                            break
                        if mode == "GPSM":
                            new_iou = np.sqrt(iousM[dind, gind] * gps[dind, gind])
                        elif mode == "IOU":
                            new_iou = iousM[dind, gind]
                        else:
                            new_iou = gps[dind, gind]
                        if new_iou < iou:
                            continue
                        if new_iou == 0.0:
                            continue
                        iou = new_iou
                        m = gind
                    if m == -1:
                        continue
                    dtIg[tind, dind] = gtIg[m]
                    dtm[tind, dind] = gt[m]["id"]
                    gtm[tind, m] = d.id
        if len(ioubs) > 0:
            for dind, d in enumerate(dt):
                if dtm[tind, dind] == 0:
                    ioub = 0.8
                    m = -1
                    for gind in range(G):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if ioubs[dind, gind] < ioub:
                            continue
                        ioub = ioubs[dind, gind]
                        m = gind
                    if m > -1:
                        dtIg[:, dind] = gtIg[m]
                        if gtIg[m]:
                            dtm[tind, dind] = gt[m]["id"]
                            gtm[tind, m] = d.id
        a = np.array([d.area < a_rng[0] or d.area > a_rng[1] for d in dt]).reshape((1, len(dt)))
        dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {
            "image_id": img_id,
            "category_id": cat_id,
            "aRng": a_rng,
            "maxDet": max_det,
            "dtIds": [d.id for d in dt],
            "gtIds": [g["id"] for g in gt],
            "dtMatches": dtm,
            "gtMatches": gtm,
            "dtScores": [d.score for d in dt],
            "gtIgnore": gtIg,
            "dtIgnore": dtIg,
        }

    # ------------------------------------------------------------------ driver
    def evaluate(self, modes: Sequence[str] = MODES, keep_pair_scores: bool = False) -> None:
        p = self.params
        modes = [m.upper() for m in modes]
        cat_set = set(p.catIds)
        dets_by_img = defaultdict(list)
        for d in self.detections:
            if d.category_id in cat_set:
                dets_by_img[d.image_id].append(d)
        I0, A0 = len(p.imgIds), len(p.areaRng)
        self.eval_imgs = {m: [None] * (len(p.catIds) * A0 * I0) for m in modes}
        max_det = p.maxDets[-1]
        for i, img_id in enumerate(p.imgIds):
            img = self.coco_gt.imgs[img_id]
            im_h, im_w = img["height"], img["width"]
            gts_img = [g for g in self.coco_gt.imgToAnns.get(img_id, []) if g["category_id"] in cat_set]
            iregion = _ignore_region(img) if gts_img else None
            cache: Dict[int, np.ndarray] = {}

            def iuv_of(d: Detection) -> np.ndarray:
                if d.id not in cache:
                    cache[d.id] = d.iuv()
                return cache[d.id]

            # (images without GT have no ignore region: all their detections are kept, as officially)
            gts_img = [g for g in gts_img if _keep(g["bbox"], iregion, None)]
            dts_img = [
                d
                for d in dets_by_img.get(img_id, [])
                if _keep(d.bbox, iregion, (lambda d=d: iuv_of(d)[0]) if d.has_densepose else None)
            ]
            gt_cache: Dict[Any, Any] = {}
            for k, cat_id in enumerate(p.catIds):
                gts = [g for g in gts_img if g["category_id"] == cat_id]
                dts = [d for d in dts_img if d.category_id == cat_id]
                order = np.argsort([-d.score for d in dts], kind="mergesort")
                dts_top = [dts[n] for n in order][:max_det]
                scores: Dict[str, Any] = {"gps": [], "box_iou": [], "mask_iou": []}
                if gts and dts_top:
                    scores["gps"] = self._gps_matrix(gts, dts_top, iuv_of, gt_cache)
                    iscrowd = [int(o.get("iscrowd", 0)) for o in gts]
                    scores["box_iou"] = mask_utils.iou([d.bbox for d in dts_top], [g["bbox"] for g in gts], iscrowd)
                    if any(m != "GPS" for m in modes):
                        scores["mask_iou"] = self._mask_ious(gts, dts_top, iuv_of, im_h, im_w)
                if keep_pair_scores:
                    self.pair_scores[img_id, cat_id] = scores
                for a, a_rng in enumerate(p.areaRng):
                    for mode in modes:
                        self.eval_imgs[mode][k * A0 * I0 + a * I0 + i] = self._evaluate_img(
                            img_id, cat_id, gts, dts, a_rng, max_det, scores, mode
                        )
            cache.clear()

    def accumulate(self, mode: str) -> Dict[str, np.ndarray]:
        p = self.params
        evals = self.eval_imgs[mode]
        T, R, K, A, M = len(p.iouThrs), len(p.recThrs), len(p.catIds), len(p.areaRng), len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        I0, A0 = len(p.imgIds), len(p.areaRng)
        for k in range(K):
            Nk = k * A0 * I0
            for a in range(A):
                Na = a * I0
                for m, max_det in enumerate(p.maxDets):
                    E = [evals[Nk + Na + i] for i in range(I0)]
                    E = [e for e in E if e is not None]
                    if len(E) == 0:
                        continue
                    dtScores = np.concatenate([e["dtScores"][0:max_det] for e in E])
                    inds = np.argsort(-dtScores, kind="mergesort")
                    dtm = np.concatenate([e["dtMatches"][:, 0:max_det] for e in E], axis=1)[:, inds]
                    dtIg = np.concatenate([e["dtIgnore"][:, 0:max_det] for e in E], axis=1)[:, inds]
                    gtIg = np.concatenate([e["gtIgnore"] for e in E])
                    npig = np.count_nonzero(gtIg == 0)
                    if npig == 0:
                        continue
                    tps = np.logical_and(dtm, np.logical_not(dtIg))
                    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtIg))
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=np.float64)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=np.float64)
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                        nd = len(tp)
                        rc = tp / npig
                        pr = tp / (fp + tp + np.spacing(1))
                        q = np.zeros((R,)).tolist()
                        recall[t, k, a, m] = rc[-1] if nd else 0
                        pr = pr.tolist()
                        for n in range(nd - 1, 0, -1):
                            if pr[n] > pr[n - 1]:
                                pr[n - 1] = pr[n]
                        idx = np.searchsorted(rc, p.recThrs, side="left")
                        try:
                            for ri, pi in enumerate(idx):
                                q[ri] = pr[pi]
                        except IndexError:
                            pass
                        precision[t, :, k, a, m] = np.array(q)
        self.eval[mode] = {"precision": precision, "recall": recall}
        return self.eval[mode]

    def summarize(self, mode: str, print_fn: Callable[[str], None] = print) -> Dict[str, float]:
        p = self.params
        ev = self.eval[mode]

        def _summarize(ap=1, iou_thr=None, area="all", max_dets=20):
            aind = [n for n, lbl in enumerate(p.areaRngLbl) if lbl == area]
            mind = [n for n, md in enumerate(p.maxDets) if md == max_dets]
            s = ev["precision"] if ap == 1 else ev["recall"]
            if iou_thr is not None:
                s = s[np.where(np.abs(iou_thr - p.iouThrs) < 0.001)[0]]
            s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
            mean_s = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
            iou_str = f"{p.iouThrs[0]:0.2f}:{p.iouThrs[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
            title = "Average Precision" if ap == 1 else "Average Recall"
            print_fn(
                f" {title:<18} {'(AP)' if ap == 1 else '(AR)'} @[ {mode}={iou_str:<9} | area={area:>6s} "
                f"| maxDets={max_dets:>3d} ] = {mean_s:0.3f}"
            )
            return mean_s

        md = p.maxDets[0]
        thr0 = p.iouThrs.min()
        stats = [_summarize(1, max_dets=md)]
        for thr in (0.2, 0.3, 0.4):
            if thr0 <= thr + 0.001:
                stats.append(_summarize(1, max_dets=md, iou_thr=thr))
        stats += [
            _summarize(1, max_dets=md, iou_thr=0.5),
            _summarize(1, max_dets=md, iou_thr=0.75),
            _summarize(1, max_dets=md, area="medium"),
            _summarize(1, max_dets=md, area="large"),
            _summarize(0, max_dets=md),
            _summarize(0, max_dets=md, iou_thr=0.5),
            _summarize(0, max_dets=md, iou_thr=0.75),
            _summarize(0, max_dets=md, area="medium"),
            _summarize(0, max_dets=md, area="large"),
        ]
        self.stats[mode] = np.array(stats)
        names = densepose_metric_names(self.min_threshold)
        return {name: float(v * 100) for name, v in zip(names, stats)}


def format_table(results: Dict[str, float]) -> str:
    """Small markdown table: one header row of metric names, one row of values."""
    keys = list(results.keys())
    head = "| " + " | ".join(f"{k:>6s}" for k in keys) + " |"
    sep = "|" + "|".join(":" + "-" * 6 + ":" for _ in keys) + "|"
    row = "| " + " | ".join(f"{results[k]:6.3f}" for k in keys) + " |"
    return "\n".join([head, sep, row])


def evaluate_densepose(
    coco_gt: COCO,
    detections: Sequence[Dict[str, Any]],
    geodesics: Optional[GeodesicEvalData],
    min_threshold: float = 0.5,
    img_ids: Optional[Sequence[int]] = None,
    modes: Sequence[str] = MODES,
    print_fn: Callable[[str], None] = print,
    vertex_embeddings: Optional[Callable[[str], Any]] = None,
    mesh_geodists: Callable[[str], Any] = _default_mesh_geodists,
) -> Dict[str, Dict[str, float]]:
    """{"densepose_gps": {...}, "densepose_gpsm": {...}, "densepose_segm": {...}} (values x 100, -1 if none)."""
    keys = {"GPS": "densepose_gps", "GPSM": "densepose_gpsm", "IOU": "densepose_segm"}
    names = densepose_metric_names(min_threshold)
    dets = [d for d in detections if _has_dp(d)]
    if len(dets) < len(detections):
        logger.warning("%d results without DensePose data are left out of DensePose AP", len(detections) - len(dets))
    if not dets:
        logger.warning("No DensePose predictions: DensePose metrics set to -1")
        return {keys[m]: {n: -1.0 for n in names} for m in modes}
    ev = DensePoseCocoEval(coco_gt, dets, geodesics, min_threshold, img_ids, vertex_embeddings, mesh_geodists)
    ev.evaluate(modes)
    out = {}
    for mode in modes:
        ev.accumulate(mode)
        print_fn(f"DensePose {mode} (official protocol, maxDets 20):")
        res = ev.summarize(mode, print_fn)
        print_fn(format_table(res))
        out[keys[mode]] = res
    return out


def _has_dp(d: Dict[str, Any]) -> bool:
    return any(d.get(k) is not None for k in ("uv", "uv_png", "uv_data", "cse_vertices", "embedding"))


def evaluate_boxes(
    coco_gt: COCO, detections: Sequence[Dict[str, Any]], print_fn: Callable[[str], None] = print
) -> Dict[str, float]:
    """COCO box AP (pycocotools COCOeval, iouType bbox): AP, AP50, AP75, APs, APm, APl (x 100)."""
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    boxes = [
        {"image_id": d["image_id"], "category_id": d["category_id"], "bbox": list(d["bbox"]), "score": d["score"]}
        for d in detections
    ]
    if not boxes:
        logger.warning("No box predictions: box metrics set to -1")
        return {n: -1.0 for n in names}
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        coco_dt = coco_gt.loadRes(boxes)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for line in buf.getvalue().splitlines():
        if line.startswith(" Average"):
            print_fn(line)
    res = {n: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan") for i, n in enumerate(names)}
    print_fn("Box AP:\n" + format_table(res))
    return res
