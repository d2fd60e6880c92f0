"""detectron2-style evaluator: box AP + DensePose GPS / GPSm / IOU AP, and ``inference_on_dataset``."""
import contextlib
import io
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from pycocotools.coco import COCO
from tqdm import tqdm

from ..postprocess.charts import densepose_chart_results
from ..utils import comm
from .densepose_coco_eval import cse_detection_data, evaluate_boxes, evaluate_densepose
from .eval_data import GeodesicEvalData, check_eval_data, resolve_eval_data_dir
from .results_format import encode_png, quantize_chart_result

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_densepose_results.json"


def load_coco(dataset_json: Union[str, os.PathLike, Dict[str, Any], COCO]) -> COCO:
    """A path to a COCO-DensePose json, its parsed dict, or a COCO object -> COCO (quietly)."""
    if isinstance(dataset_json, COCO):
        return dataset_json
    coco = COCO()
    if isinstance(dataset_json, dict):
        coco.dataset = dataset_json
    else:
        with open(dataset_json, "r") as f:
            coco.dataset = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _dist_info():
    return comm.get_rank(), comm.get_world_size()


class DensePoseCOCOEvaluator:
    """Collects the model's per-image outputs and scores them.

    ``process`` keeps, per detection, the box, score, category and the quantised IUV PNG-compressed (a few
    kB), so memory stays small whatever the dataset size. ``evaluate`` returns
    ``{"bbox": {...}, "densepose_gps": {...}, "densepose_gpsm": {...}, "densepose_segm": {...}}``
    (values in percent, detectron2's keys) on the main process and ``{}`` on the others; with ``output_dir``
    the predictions are written there in the challenge format (``coco_densepose_results.json``).
    """

    def __init__(
        self,
        dataset_json: Union[str, os.PathLike, Dict[str, Any], COCO],
        eval_data_dir: Optional[Union[str, os.PathLike]] = None,
        output_dir: Optional[Union[str, os.PathLike]] = None,
        min_iou_threshold: float = 0.5,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        evaluate_densepose: bool = True,
        evaluator_type: str = "iou",
        embedder=None,
    ):
        """evaluator_type: "iou" (chart results; needs the chart eval files) or "cse" (embedding results,
        scored on the GT's meshes; ``embedder(mesh name) -> (V, D)`` vertex embeddings, detectron2's
        ``roi_heads.embedder``: given here or picked up from the model by ``inference_on_dataset``)."""
        if evaluator_type not in ("iou", "cse"):
            raise ValueError(f"evaluator_type must be 'iou' or 'cse', got '{evaluator_type}'")
        self._type = evaluator_type
        self.embedder = embedder
        self._coco = load_coco(dataset_json)
        self._eval_data_dir = resolve_eval_data_dir(eval_data_dir)
        self._output_dir = Path(output_dir) if output_dir else None
        self._min_threshold = float(min_iou_threshold)
        self._cache_dir = cache_dir
        self._do_densepose = evaluate_densepose
        if evaluate_densepose and evaluator_type == "iou":
            check_eval_data(self._eval_data_dir)  # fail early, naming what is missing
        self._geodesics: Optional[GeodesicEvalData] = None
        # contiguous class index -> dataset category id (sorted ids, as detectron2's dataset mapping)
        self._cat_ids = sorted(self._coco.getCatIds())
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_json, output_dir=None, **kwargs) -> "DensePoseCOCOEvaluator":
        return cls(
            dataset_json,
            resolve_eval_data_dir(cfg),
            output_dir if output_dir is not None else (cfg.OUTPUT_DIR or None),
            min_iou_threshold=cfg.DENSEPOSE_EVALUATION.MIN_IOU_THRESHOLD,
            **kwargs,
        )

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []
        self._vertex_embeddings: Dict[str, torch.Tensor] = {}

    def vertex_embeddings(self, mesh_name: str) -> torch.Tensor:
        """The embedder's (V, D) vertex embeddings of a mesh, computed once per evaluation run."""
        if mesh_name not in self._vertex_embeddings:
            if self.embedder is None:
                raise ValueError("CSE evaluation needs the model's vertex embedder (DensePoseCOCOEvaluator "
                                 "embedder=model.roi_heads.embedder)")
            with torch.no_grad():
                self._vertex_embeddings[mesh_name] = self.embedder(mesh_name).detach().float().cpu()
        return self._vertex_embeddings[mesh_name]

    def _category_id(self, cls: int) -> int:
        return self._cat_ids[cls] if 0 <= cls < len(self._cat_ids) else cls

    def process(self, inputs: Sequence[Dict[str, Any]], outputs: Sequence[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            if len(instances) == 0:
                continue
            boxes = instances.pred_boxes
            boxes = boxes.tensor if hasattr(boxes, "tensor") else boxes
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
            xywh = boxes.clone()
            xywh[:, 2:] -= xywh[:, :2]
            scores = instances.scores.tolist()
            classes = instances.pred_classes.tolist() if instances.has("pred_classes") else [0] * len(instances)
            charts = cse = None
            if instances.has("pred_densepose"):
                if hasattr(instances.pred_densepose, "embedding"):  # CSE: DensePoseEmbeddingPredictorOutput
                    cse = instances.pred_densepose
                else:
                    charts = densepose_chart_results(boxes, instances.pred_densepose)
            for k in range(len(instances)):
                pred = {
                    "image_id": inp["image_id"],
                    "category_id": self._category_id(int(classes[k])),
                    "bbox": [float(v) for v in xywh[k].tolist()],
                    "score": float(scores[k]),
                }
                if charts is not None:
                    iuv = quantize_chart_result(charts[k])
                    pred["uv_shape"] = list(iuv.shape)
                    pred["uv_png"] = encode_png(iuv)
                if cse is not None:  # only the vertices at this image's GT points and the mask RLE are kept
                    gts = [g for g in self._coco.imgToAnns.get(inp["image_id"], [])
                           if g["category_id"] == pred["category_id"]]
                    pred.update(cse_detection_data(cse.coarse_segm[k], cse.embedding[k], pred["bbox"], gts,
                                                   self.vertex_embeddings))
                self._predictions.append(pred)

    def _gather(self) -> Optional[List[Dict[str, Any]]]:
        rank, world = _dist_info()
        if world == 1:
            return self._predictions
        gathered: List[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, self._predictions)
        if rank != 0:
            return None
        return [p for part in gathered for p in part]

    def write_results(self, predictions: Sequence[Dict[str, Any]], path: Union[str, os.PathLike]) -> Path:
        """Write predictions in the COCO-DensePose challenge results format."""
        import base64

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.write("[")
            for n, p in enumerate(predictions):
                entry = {k: p[k] for k in ("image_id", "category_id", "bbox", "score")}
                if "uv_png" in p:
                    entry["uv_shape"] = p["uv_shape"]
                    entry["uv_data"] = base64.encodebytes(p["uv_png"]).decode("ascii")
                if "cse_vertices" in p:  # our CSE record (tied to this GT): vertices at its points, mask RLE
                    entry["cse_vertices"] = {str(k): v.tolist() for k, v in p["cse_vertices"].items()}
                    entry["cse_mask"] = {"size": list(p["cse_mask"]["size"]),
                                         "counts": p["cse_mask"]["counts"].decode("ascii")}
                f.write(("," if n else "") + "\n" + json.dumps(entry))
            f.write("\n]\n")
        return path

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        predictions = self._gather()
        if predictions is None:
            return {}
        if self._output_dir is not None:
            path = self.write_results(predictions, self._output_dir / RESULTS_FILE)
            logger.info("DensePose results written to %s", path)
        results: Dict[str, Dict[str, float]] = OrderedDict()
        results["bbox"] = evaluate_boxes(self._coco, predictions, print_fn=logger.info)
        if self._do_densepose:
            if self._geodesics is None and self._type == "iou":
                self._geodesics = GeodesicEvalData(self._eval_data_dir, self._cache_dir)
            results.update(
                evaluate_densepose(
                    self._coco, predictions, self._geodesics, self._min_threshold, print_fn=logger.info
                )
            )
        return results


def inference_on_dataset(model, data_loader, evaluator, desc: str = "Inference") -> Dict[str, Any]:
    """Run ``model`` in eval mode (no grad) over ``data_loader`` (batches: lists of input dicts), feed
    ``evaluator.process`` and return ``evaluator.evaluate()`` (``{}`` without an evaluator / on non-main ranks)."""
    rank, _ = _dist_info()
    if evaluator is not None:
        evaluator.reset()
    try:
        total = len(data_loader)
    except TypeError:
        total = None
    if evaluator is not None and getattr(evaluator, "embedder", False) is None:
        # CSE evaluation scores with the model's own vertex embeddings (detectron2 passes roi_heads.embedder)
        # (an OrtModel of a CSE export: the vertex embeddings shipped beside its graph)
        evaluator.embedder = getattr(getattr(model, "roi_heads", None), "embedder", None)
        if evaluator.embedder is None and callable(getattr(model, "vertex_embeddings", None)):
            evaluator.embedder = model.vertex_embeddings
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs in tqdm(data_loader, total=total, desc=desc, disable=rank != 0, dynamic_ncols=True):
                outputs = model(inputs)
                if evaluator is not None:
                    evaluator.process(inputs, outputs)
    finally:
        model.train(was_training)
    if evaluator is None:
        return {}
    results = evaluator.evaluate()
    return results if results is not None else {}
