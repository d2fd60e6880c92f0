"""Peer side of test_reference_evaluation.py: score a challenge-format results file with the OFFICIAL
DensePoseCocoEval (detectron2 projects/DensePose, iouType "densepose", data mode IUV_DT).

    eval_official.py GT.json RESULTS.json EVAL_DATA_DIR OUT.json MIN_THRESHOLD [MIN_THRESHOLD ...]

The evaluator fetches its three data files through ``PathManager.get_local_path(<dl.fbaipublicfiles URL>)``;
the module's ``PathManager`` is replaced here by a shim that maps each URL's file name into EVAL_DATA_DIR
(no network). Results entries carry ``uv_shape`` / ``uv_data`` (base64 PNG, RGB = I, U*255, V*255); they are
decoded here with PIL (channels first) into the ``densepose`` field the detectron2 evaluator reads
(``DensePoseChartResultQuantized.labels_uv_uint8``), then driven as detectron2's
``_evaluate_predictions_on_coco`` / ``_derive_results_from_coco_eval`` do: ``coco_gt.loadRes``, one
``DensePoseCocoEval`` per mode (GPS, GPSM, IOU), ``params.iouThrs`` from MIN_THRESHOLD, evaluate(),
accumulate(), summarize(), ``stats``.

OUT.json: {"<min_threshold>": {"GPS"|"GPSM"|"IOU": {"metrics": [names], "stats": [floats],
"pair_scores": {"<img>": [[...]]}}}} (pair_scores: the GPS / mask-IoU matrices, for failure messages).
"""
import base64
import contextlib
import io
import json
import logging
import os
import sys

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

import densepose.evaluation.densepose_coco_evaluation as dce
from densepose.evaluation.densepose_coco_evaluation import DensePoseCocoEval, DensePoseEvalMode
from densepose.evaluation.evaluator import _get_densepose_metrics
from densepose.structures.chart_result import DensePoseChartResultQuantized

OFFICIAL_FILES = ("SMPL_subdiv.mat", "SMPL_SUBDIV_TRANSFORM.mat", "Pdist_matrix.pkl")


class LocalPathManager:
    """Stands in for detectron2's PathManager inside the evaluator module: URL -> local eval file."""

    def __init__(self, eval_dir):
        self.eval_dir = eval_dir
        self.requested = []

    def get_local_path(self, path, **kwargs):
        name = path.rsplit("/", 1)[-1]
        if name not in OFFICIAL_FILES:
            raise AssertionError(f"unexpected data file requested by the evaluator: {path}")
        self.requested.append(name)
        local = os.path.join(self.eval_dir, name)
        if not os.path.isfile(local):
            raise FileNotFoundError(local)
        return local


def decode_entry(entry):
    png = base64.decodebytes(entry["uv_data"].encode("ascii"))
    with Image.open(io.BytesIO(png)) as im:
        arr = np.moveaxis(np.array(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.uint8), -1, 0)
    shape = tuple(int(s) for s in entry["uv_shape"])
    if arr.shape != shape:
        raise AssertionError(f"uv_data of shape {arr.shape} does not match uv_shape {shape}")
    return np.ascontiguousarray(arr)


def main(gt_path, results_path, eval_dir, out_path, *thresholds):
    logging.basicConfig(level=logging.WARNING)
    shim = LocalPathManager(eval_dir)
    dce.PathManager = shim

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
    with open(results_path) as f:
        raw = json.load(f)
    results = []
    for entry in raw:
        r = {k: v for k, v in entry.items() if k not in ("uv_data", "uv_shape")}
        r["densepose"] = DensePoseChartResultQuantized(labels_uv_uint8=torch.from_numpy(decode_entry(entry)))
        results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)

    out = {}
    for thr_s in thresholds:
        thr = float(thr_s)
        metrics = _get_densepose_metrics(thr)
        per_mode = {}
        for mode_name in ("GPS", "GPSM", "IOU"):
            ev = DensePoseCocoEval(coco_gt, coco_dt, "densepose", dpEvalMode=getattr(DensePoseEvalMode, mode_name))
            ev.params.iouThrs = np.linspace(thr, 0.95, int(np.round((0.95 - thr) / 0.05)) + 1, endpoint=True)
            with contextlib.redirect_stdout(io.StringIO()):
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            stats = [float(s) for s in np.asarray(ev.stats)]
            assert len(stats) == len(metrics), (stats, metrics)
            pair = {}
            for (img, _cat), v in ev.ious.items():
                if len(v) > 0:
                    pair[str(img)] = {"gps": np.asarray(v[0]).tolist(), "box_iou": np.asarray(v[1]).tolist()}
                    if mode_name != "GPS" and len(ev.real_ious[img, _cat]) > 0:
                        pair[str(img)]["mask_iou"] = np.asarray(ev.real_ious[img, _cat]).tolist()
            per_mode[mode_name] = {"metrics": metrics, "stats": stats, "pair_scores": pair}
        out[thr_s] = per_mode
    if sorted(set(shim.requested)) != sorted(OFFICIAL_FILES):
        raise AssertionError(f"the evaluator did not load all official files: {shim.requested}")
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
