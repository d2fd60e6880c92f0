"""Your own COCO-DensePose JSON as a named dataset, without writing Python (detectron2's
`register_coco_instances`): `register_densepose_coco_json(name, json_file, image_root)` in code, or in the
config / on the command line as "NAME=ANN.json:IMAGES/" entries of DATASETS.REGISTER (train_net's
`--dataset NAME=ANN.json:IMAGES/` appends one). The loader is the built-in one (same error policy)."""
import os
from typing import Iterable, List, Tuple

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_densepose_coco_json


def parse_dataset_spec(spec: str) -> Tuple[str, str, str]:
    """"NAME=ANN.json:IMAGES/" -> (name, json_file, image_root)."""
    name, eq, paths = str(spec).partition("=")
    json_file, colon, image_root = paths.rpartition(":")
    if not (eq and colon and name.strip() and json_file and image_root):
        raise ValueError(f"dataset '{spec}': expected NAME=ANN.json:IMAGES/ (a name, the annotation file, the "
                         "image folder)")
    return name.strip(), json_file, image_root


def register_densepose_coco_json(name: str, json_file: str, image_root: str) -> None:
    """Register `name`: the annotation file and image folder are read when the dataset is first used."""
    json_file, image_root = os.path.expanduser(json_file), os.path.expanduser(image_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Dataset '{name}': annotation file not found: {json_file}")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Dataset '{name}': image folder not found: {image_root}")
    DatasetCatalog.register(name, lambda: load_densepose_coco_json(json_file, image_root, name), replace=True)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="densepose",
                                  thing_classes=["person"])


def register_datasets_from_config(cfg) -> List[str]:
    """Register every DATASETS.REGISTER entry; returns their names."""
    return register_dataset_specs(cfg.DATASETS.REGISTER)


def register_dataset_specs(specs: Iterable[str]) -> List[str]:
    names = []
    for spec in specs:
        name, json_file, image_root = parse_dataset_spec(spec)
        register_densepose_coco_json(name, json_file, image_root)
        names.append(name)
    return names
