from .builtin import (
    DENSEPOSE_COCO_DATASETS,
    SYNTHETIC_SPLITS,
    register_builtin_datasets,
    synthetic_root,
    uv_symmetry_default_path,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .coco import datasets_root, load_densepose_coco_json
from .register import parse_dataset_spec, register_datasets_from_config, register_densepose_coco_json

register_builtin_datasets(replace=False)

__all__ = [
    "DENSEPOSE_COCO_DATASETS",
    "SYNTHETIC_SPLITS",
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "datasets_root",
    "load_densepose_coco_json",
    "parse_dataset_spec",
    "register_datasets_from_config",
    "register_densepose_coco_json",
    "register_builtin_datasets",
    "synthetic_root",
    "uv_symmetry_default_path",
]
