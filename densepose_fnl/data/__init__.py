"""Datasets (DensePose-COCO, embedded synthetic set), mapper / augmentation and data loaders."""
from .build import (
    InferenceSampler,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    trivial_batch_collator,
)
from .datasets import (
    DENSEPOSE_COCO_DATASETS,
    DatasetCatalog,
    MetadataCatalog,
    datasets_root,
    load_densepose_coco_json,
    register_builtin_datasets,
    synthetic_root,
)
from .image_io import ImageReadError, read_image
from .mapper import DatasetMapper, annotations_to_instances, resolve_uv_symmetry_path
from .synthetic import ensure_synthetic_dataset, generate_synthetic_dataset, synthetic_uv_symmetry_tables

__all__ = [
    "DENSEPOSE_COCO_DATASETS",
    "DatasetCatalog",
    "DatasetMapper",
    "ImageReadError",
    "InferenceSampler",
    "MetadataCatalog",
    "TrainingSampler",
    "annotations_to_instances",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "datasets_root",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "get_detection_dataset_dicts",
    "load_densepose_coco_json",
    "read_image",
    "register_builtin_datasets",
    "resolve_uv_symmetry_path",
    "synthetic_root",
    "synthetic_uv_symmetry_tables",
    "trivial_batch_collator",
]
