"""Dataset dict -> model input: read, resize, flip (with DensePose label symmetries), targets.

Flip policy: the UV symmetry tables come from $DENSEPOSE_UV_SYMMETRY if set (missing file = error), else
from the image's dataset metadata `densepose_transform_src` (DensePose-COCO:
<DENSEPOSE_DATASETS>/densepose_eval_data/UV_symmetry_transforms.mat; synthetic set: the .mat the
generator writes beside it). If that file is absent, ONE warning is logged per file and images that
carry DensePose chart annotations are never flipped (box-only images still are). A malformed file is an
error. CSE annotations (dp_vertex, ref_model) flip through their mesh's symmetry file
(densepose_fnl.data.meshes; a missing file is an error naming it).
"""
import copy
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..structures import Instances
from ..structures.densepose_annotations import (
    DensePoseDataRelative,
    DensePoseList,
    DensePoseTransformData,
    has_densepose,
    has_densepose_chart,
)
from .datasets import MetadataCatalog
from .image_io import read_image
from .meshes import set_mesh_data_dir
from .datasets.builtin import refresh_metadata, uv_symmetry_default_path
from .transforms import RandomFlip, ResizeShortestEdge, TransformList

logger = logging.getLogger(__name__)

__all__ = ["DatasetMapper", "annotations_to_instances", "resolve_uv_symmetry_path"]

_WARNED_MISSING: set = set()


def resolve_uv_symmetry_path(dataset_name: Optional[str] = None) -> str:
    """Where the UV symmetry tables for `dataset_name` are expected (see the module docstring)."""
    env = os.environ.get("DENSEPOSE_UV_SYMMETRY")
    if env:
        return env
    if dataset_name:
        refresh_metadata(dataset_name)
        src = MetadataCatalog.get(dataset_name).get("densepose_transform_src")
        if src and "://" not in src:
            return src
    return uv_symmetry_default_path()


def _xyxy(ann: Dict[str, Any]) -> List[float]:
    x, y, a, b = (float(t) for t in ann["bbox"])
    mode = ann.get("bbox_mode", "XYWH_ABS")
    mode = getattr(mode, "name", mode)
    if mode in ("XYWH_ABS", 1):
        return [x, y, x + a, y + b]
    if mode in ("XYXY_ABS", 0):
        return [x, y, a, b]
    raise ValueError(f"unsupported bbox_mode {mode!r} (expected XYWH_ABS or XYXY_ABS)")


def annotations_to_instances(
    annos: Sequence[Dict[str, Any]],
    image_size,
    transforms: Optional[TransformList] = None,
    transform_data: Optional[DensePoseTransformData] = None,
    file_name: str = "",
) -> Instances:
    """Non-crowd annotations -> Instances(gt_boxes (N,4) XYXY, gt_classes (N,), gt_densepose list)."""
    transforms = transforms or TransformList([])
    h, w = int(image_size[0]), int(image_size[1])
    annos = [a for a in annos if int(a.get("iscrowd", 0)) == 0]
    if annos:
        boxes = transforms.apply_box(np.array([_xyxy(a) for a in annos], dtype=np.float32))
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    else:
        boxes = np.zeros((0, 4), dtype=np.float32)
    flip = transforms.has_hflip
    dps = []
    for a in annos:
        if not has_densepose(a):
            dps.append(None)
            continue
        dp = DensePoseDataRelative.from_annotation(a, where=f"{file_name}: annotation id {a.get('id', '?')}")
        if flip:  # chart points need the UV tables, CSE vertices the mesh symmetry (an error if absent)
            dp = dp.hflip(transform_data)
        dps.append(dp)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    inst = Instances((h, w))
    inst.gt_boxes = torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4)
    inst.gt_classes = torch.as_tensor([int(a["category_id"]) for a, k in zip(annos, keep) if k], dtype=torch.long)
    inst.gt_densepose = DensePoseList([d for d, k in zip(dps, keep) if k])
    return inst


class DatasetMapper:
    """Callable: dataset dict -> {"file_name", "image_id", "height", "width" (original), "image" (uint8
    CHW tensor, INPUT.FORMAT order, resized), "instances" (train only: gt_boxes, gt_classes, gt_densepose)}.

    Randomness comes from `self.rng` (numpy Generator); `reseed(seed)` resets it (the train loader
    reseeds every worker)."""

    def __init__(self, cfg, is_train: bool = True, seed: Optional[int] = None):
        self.is_train = is_train
        self.image_format = cfg.INPUT.FORMAT
        if self.image_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB', got '{self.image_format}'")
        if is_train:
            sizes = cfg.INPUT.MIN_SIZE_TRAIN
            sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
            self.resize = ResizeShortestEdge(sizes, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
            mode = str(cfg.INPUT.RANDOM_FLIP).lower()
            if mode == "horizontal":
                self.flip: Optional[RandomFlip] = RandomFlip(0.5)
            elif mode in ("none", ""):
                self.flip = None
            else:
                raise ValueError(
                    f"INPUT.RANDOM_FLIP '{cfg.INPUT.RANDOM_FLIP}' is not supported: use 'horizontal' or 'none' "
                    f"(DensePose labels have no vertical symmetry)"
                )
        else:
            self.resize = ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
            self.flip = None
        env = os.environ.get("DENSEPOSE_UV_SYMMETRY")
        if self.flip is not None and env and not os.path.isfile(env):
            raise FileNotFoundError(f"DENSEPOSE_UV_SYMMETRY points to a missing file: {env}")
        self._transform_data: Dict[str, Optional[DensePoseTransformData]] = {}
        set_mesh_data_dir(cfg)  # CSE annotations flip through their mesh's symmetry file
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def transform_data_for(self, dataset_name: Optional[str]) -> Optional[DensePoseTransformData]:
        """UV symmetry tables for a dataset, or None (with one warning) if the file is absent."""
        path = resolve_uv_symmetry_path(dataset_name)
        if path not in self._transform_data:
            if os.path.isfile(path):
                self._transform_data[path] = DensePoseTransformData.load(path)
            else:
                if path not in _WARNED_MISSING:
                    _WARNED_MISSING.add(path)
                    logger.warning(
                        "UV symmetry file %s not found: images with DensePose annotations will NOT be flipped "
                        "(set DENSEPOSE_UV_SYMMETRY or put UV_symmetry_transforms.mat there; see datasets/README.md)",
                        path,
                    )
                self._transform_data[path] = None
        return self._transform_data[path]

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.copy(dataset_dict)
        file_name = d["file_name"]
        image = read_image(file_name, self.image_format)
        h, w = image.shape[:2]
        if ("height" in d and int(d["height"]) != h) or ("width" in d and int(d["width"]) != w):
            raise ValueError(
                f"Image {file_name} is {w}x{h} (WxH) but its dataset entry says {d.get('width')}x{d.get('height')}"
            )
        d.setdefault("height", h)
        d.setdefault("width", w)
        resize = self.resize.get_transform(h, w, self.rng)
        transforms = [resize]
        annos = d.pop("annotations", None) or []
        transform_data = None
        if self.flip is not None:
            nh, nw = getattr(resize, "new_h", h), getattr(resize, "new_w", w)
            flip = self.flip.get_transform(nh, nw, self.rng)
            if flip.__class__.__name__ == "HFlipTransform":
                needs_dp = any(has_densepose_chart(a) and int(a.get("iscrowd", 0)) == 0 for a in annos)
                if needs_dp:
                    transform_data = self.transform_data_for(d.get("dataset"))
                if not needs_dp or transform_data is not None:
                    transforms.append(flip)
        tl = TransformList(transforms)
        image = tl.apply_image(image)
        d["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.is_train:
            d["instances"] = annotations_to_instances(annos, image.shape[:2], tl, transform_data, file_name)
        return d
