"""The evaluator of a dataset from the config (detectron2's `DefaultTrainer.build_evaluator`)."""
import functools
import json
import logging
import os
from typing import Optional, Sequence

from .eval_data import EvalDataMissingError, check_eval_data, resolve_eval_data_dir
from .evaluator import DensePoseCOCOEvaluator
from .synthetic_mesh import ensure_synthetic_eval_data

logger = logging.getLogger(__name__)


def build_evaluator(cfg, dataset_name: str, output_folder: Optional[str] = None,
                    image_ids: Optional[Sequence[int]] = None) -> DensePoseCOCOEvaluator:
    """Box AP, and with MODEL.DENSEPOSE_ON the DensePose AP, of `dataset_name` against its annotation file.

    TYPE cse scores embeddings on the GT's meshes (DATASETS.MESH_DATA_DIR; the model's embedder is picked
    up by inference_on_dataset). The chart DensePose AP needs the official eval files (DENSEPOSE_EVALUATION.EVAL_DATA_DIR); the synthetic sets
    fall back to the synthetic body mesh's files (written once beside the set), other sets to box AP only
    (a warning). image_ids: score only these images (the annotation file restricted to them, e.g. the
    benchmark's subsets of images with at most N people; one ground truth object per subset is shared by
    the evaluators that ask for it)."""
    from ..data import MetadataCatalog

    from ..data.meshes import set_mesh_data_dir

    e = cfg.DENSEPOSE_EVALUATION
    if e.TYPE not in ("iou", "cse"):
        raise ValueError(f"DENSEPOSE_EVALUATION.TYPE must be 'iou' (chart models) or 'cse', got '{e.TYPE}'")
    set_mesh_data_dir(cfg)  # CSE: the GT meshes' geodesic tables
    if e.STORAGE not in ("none", "ram", "file"):
        raise ValueError(f"DENSEPOSE_EVALUATION.STORAGE must be none, ram or file, got '{e.STORAGE}'")
    # every STORAGE keeps the same results; ours are PNG-compressed in memory, which is what 'ram' / 'file'
    # (detectron2's memory savers) are for
    meta = MetadataCatalog.get(dataset_name)
    json_file = getattr(meta, "json_file", None)
    if not json_file or not os.path.isfile(json_file):
        raise FileNotFoundError(f"Dataset '{dataset_name}' has no annotation file to evaluate against "
                                f"(metadata json_file = {json_file})")
    eval_dir = resolve_eval_data_dir(cfg)
    do_dp = cfg.MODEL.DENSEPOSE_ON
    if do_dp and e.TYPE == "iou":
        try:
            check_eval_data(eval_dir)
        except EvalDataMissingError:
            if dataset_name.startswith("densepose_synthetic"):
                eval_dir = ensure_synthetic_eval_data(os.path.join(os.path.dirname(os.path.dirname(json_file)),
                                                                   "eval_data"))
                logger.info("Synthetic set: DensePose AP is scored with the synthetic body mesh geodesics "
                            "in %s (a proxy: the official SMPL eval files are missing)", eval_dir)
            else:
                logger.warning("DensePose evaluation data missing in %s: only box AP is computed for %s",
                               eval_dir, dataset_name)
                do_dp = False
    output_folder = output_folder or (os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
                                      if cfg.OUTPUT_DIR else None)
    gt = json_file
    if image_ids is not None:
        gt = _restricted_ground_truth(json_file, os.path.getmtime(json_file), frozenset(image_ids))
    return DensePoseCOCOEvaluator(gt, eval_dir, output_folder,
                                  min_iou_threshold=cfg.DENSEPOSE_EVALUATION.MIN_IOU_THRESHOLD,
                                  evaluate_densepose=do_dp, evaluator_type=e.TYPE)


@functools.lru_cache(maxsize=8)
def _restricted_ground_truth(json_file: str, mtime: float, keep: frozenset):
    """The annotation file's images and annotations of the ids in `keep`, as a COCO object (read-only for
    the evaluators; the benchmark's (runtime, size) jobs share one per subset instead of a copy each)."""
    from .evaluator import load_coco

    with open(json_file) as f:
        gt = json.load(f)
    gt["images"] = [im for im in gt["images"] if im["id"] in keep]
    gt["annotations"] = [a for a in gt.get("annotations", []) if a["image_id"] in keep]
    return load_coco(gt)
