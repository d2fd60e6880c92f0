"""DensePose-COCO (COCO JSON with dp_* fields) -> detectron2-style dataset dicts.

Error policy (also in datasets/README.md):
  errors (ValueError / FileNotFoundError naming the file, image id and annotation id):
    missing or unreadable JSON, JSON without images/annotations/categories, an annotation without a
    bbox, inconsistent DensePose fields (unequal dp_* lengths, part of the dp_* keys, I outside 1..24,
    U/V outside [0, 1], dp_masks not 14 entries or a malformed entry), images that are not on disk
    (their people would count as missed detections in evaluation and train nothing: a wrong result);
  logged skips (one warning with the count per file):
    annotations with a degenerate box (w or h <= 0), annotations of an unknown image id,
    duplicate annotation ids (kept, only reported).
"""
import contextlib
import io
import logging
import os
from typing import Any, Dict, List, Optional

from ...structures.densepose_annotations import DENSEPOSE_KEYS, validate_densepose_annotation
from ...utils.json_io import MalformedFileError, read_json
from .catalog import MetadataCatalog

logger = logging.getLogger(__name__)

BBOX_MODE_XYWH_ABS = "XYWH_ABS"


def datasets_root() -> str:
    """$DENSEPOSE_DATASETS, else $DETECTRON2_DATASETS, else ./datasets."""
    return os.environ.get("DENSEPOSE_DATASETS") or os.environ.get("DETECTRON2_DATASETS") or "datasets"


def check_coco_dict(data: Any, json_file: str) -> Dict[str, Any]:
    """`data` if it is a COCO annotation object (images with id / file_name / height / width, annotations
    with image_id / category_id, categories), else MalformedFileError naming `json_file` and the entry;
    annotations without an id get a unique negative one."""
    if not isinstance(data, dict):
        raise MalformedFileError(f"{json_file}: not a COCO JSON object (found a {type(data).__name__})")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise MalformedFileError(f"{json_file} lacks the COCO list(s) {missing}")
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(key not in img for key in ("id", "file_name", "height", "width")):
            raise MalformedFileError(f"{json_file}: images[{k}] lacks id/file_name/height/width")
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise MalformedFileError(f"{json_file}: annotations[{k}] lacks image_id/category_id")
        ann.setdefault("id", -(k + 1))
    return data


def _read_coco(json_file: str, dataset_name: str):
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset '{dataset_name}': annotation file not found: {json_file} "
            f"(set DENSEPOSE_DATASETS to the folder holding coco/annotations; see datasets/README.md)"
        )
    try:
        data = check_coco_dict(read_json(json_file, "annotation file"), json_file)
    except MalformedFileError as e:
        raise MalformedFileError(f"Dataset '{dataset_name}': {e}") from None
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_densepose_coco_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None
) -> List[Dict[str, Any]]:
    """Load a DensePose-COCO style JSON into dataset dicts (see module docstring for the error policy).

    Each dict: file_name, height, width, image_id, annotations = [{bbox (XYWH), bbox_mode "XYWH_ABS",
    category_id (contiguous, 0-based), iscrowd, id, and when present dp_x, dp_y, dp_I, dp_U, dp_V,
    dp_masks (list of 14 RLE dicts / [])}]. Also sets the dataset's metadata (thing_classes,
    thing_dataset_id_to_contiguous_id, json_file, image_root).
    """
    name = dataset_name or os.path.basename(json_file)
    coco = _read_coco(json_file, name)
    cat_ids = sorted(coco.getCatIds())
    cats = coco.loadCats(cat_ids)
    id_map = {cid: k for k, cid in enumerate(cat_ids)}
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[c["name"] for c in cats],
            thing_dataset_id_to_contiguous_id=id_map,
            json_file=json_file,
            image_root=image_root,
        )

    img_ids = sorted(coco.imgs.keys())
    known_images = set(img_ids)
    orphan = sum(1 for a in coco.anns.values() if a["image_id"] not in known_images)
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    duplicates = len(ann_ids) - len(set(ann_ids))
    degenerate = 0
    records = []
    for img_id in img_ids:
        img = coco.imgs[img_id]
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img_id,
            "dataset": name,
        }
        objs = []
        for ann in coco.imgToAnns.get(img_id, []):
            where = f"{json_file}: image id {img_id}, annotation id {ann['id']}"
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{where}: missing or malformed bbox {bbox!r}")
            if ann["category_id"] not in id_map:
                raise ValueError(f"{where}: category_id {ann['category_id']} is not in the categories list")
            bbox = [float(b) for b in bbox]
            if bbox[2] <= 0 or bbox[3] <= 0:
                degenerate += 1
                continue
            validate_densepose_annotation(ann, where)
            obj = {
                "id": ann["id"],
                "bbox": bbox,
                "bbox_mode": BBOX_MODE_XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            if "area" in ann:
                obj["area"] = float(ann["area"])
            if "segmentation" in ann:
                obj["segmentation"] = ann["segmentation"]
            for key in DENSEPOSE_KEYS:
                if ann.get(key) is not None:
                    obj[key] = ann[key]
            objs.append(obj)
        record["annotations"] = objs
        records.append(record)
    absent = [r["file_name"] for r in records if not os.path.isfile(r["file_name"])]
    if absent:
        raise FileNotFoundError(f"Dataset '{name}': {len(absent)} of {len(records)} images of {json_file} are not "
                                f"on disk under {image_root} (first: {absent[0]})")
    if degenerate:
        logger.warning("%s: skipped %d annotation(s) with an empty box (w or h <= 0)", json_file, degenerate)
    if orphan:
        logger.warning("%s: skipped %d annotation(s) whose image id is not in 'images'", json_file, orphan)
    if duplicates:
        logger.warning("%s: %d duplicate annotation id(s) (kept)", json_file, duplicates)
    logger.info("Loaded %d images from %s", len(records), json_file)
    return records
