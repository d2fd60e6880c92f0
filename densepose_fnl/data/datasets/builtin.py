"""Built-in datasets: DensePose-COCO 2014 (detectron2's names, chart and CSE) and the embedded synthetic set
(chart, and CSE with --cse).

Paths are resolved when a dataset is loaded (so DENSEPOSE_DATASETS / DENSEPOSE_SYNTHETIC_ROOT may be set
after import); the metadata is refreshed at that moment too.
"""
import os
from typing import Dict, Tuple

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import datasets_root, load_densepose_coco_json

# name -> (images folder, annotation file), relative to the datasets root
DENSEPOSE_COCO_DATASETS: Dict[str, Tuple[str, str]] = {
    "densepose_coco_2014_train": ("coco/train2014", "coco/annotations/densepose_train2014.json"),
    "densepose_coco_2014_valminusminival": ("coco/val2014", "coco/annotations/densepose_valminusminival2014.json"),
    "densepose_coco_2014_minival": ("coco/val2014", "coco/annotations/densepose_minival2014.json"),
    "densepose_coco_2014_minival_100": ("coco/val2014", "coco/annotations/densepose_minival2014_100.json"),
    # CSE annotations (dp_vertex, ref_model): detectron2's names and files
    "densepose_coco_2014_train_cse": ("coco/train2014", "coco_cse/densepose_train2014_cse.json"),
    "densepose_coco_2014_minival_cse": ("coco/val2014", "coco_cse/densepose_minival2014_cse.json"),
    "densepose_coco_2014_minival_100_cse": ("coco/val2014", "coco_cse/densepose_minival2014_100_cse.json"),
    "densepose_coco_2014_valminusminival_cse": ("coco/val2014", "coco_cse/densepose_valminusminival2014_cse.json"),
}

SYNTHETIC_SPLITS = {"densepose_synthetic_train": "train", "densepose_synthetic_val": "val"}
# the same images with CSE annotations (tools/generate_synthetic_dataset.py --cse)
SYNTHETIC_CSE_SPLITS = {"densepose_synthetic_cse_train": "train", "densepose_synthetic_cse_val": "val"}


def uv_symmetry_default_path() -> str:
    """<datasets root>/densepose_eval_data/UV_symmetry_transforms.mat"""
    return os.path.join(datasets_root(), "densepose_eval_data", "UV_symmetry_transforms.mat")


def synthetic_root() -> str:
    """$DENSEPOSE_SYNTHETIC_ROOT, else <datasets root>/synthetic."""
    return os.environ.get("DENSEPOSE_SYNTHETIC_ROOT") or os.path.join(datasets_root(), "synthetic")


def _coco_paths(name: str) -> Dict[str, str]:
    images, ann = DENSEPOSE_COCO_DATASETS[name]
    root = datasets_root()
    return {
        "image_root": os.path.join(root, images),
        "json_file": os.path.join(root, ann),
        "densepose_transform_src": uv_symmetry_default_path(),
        "evaluator_type": "densepose",
    }


def _synthetic_paths(name: str) -> Dict[str, str]:
    from ..synthetic import synthetic_split_paths

    split = SYNTHETIC_SPLITS[name]
    root = synthetic_root()
    images, ann = synthetic_split_paths(root, split)
    return {
        "image_root": images,
        "json_file": ann,
        "densepose_transform_src": os.path.join(root, "UV_symmetry_transforms.mat"),
        "evaluator_type": "densepose",
    }


def _synthetic_cse_paths(name: str) -> Dict[str, str]:
    from ..synthetic import register_synthetic_mesh, synthetic_cse_paths

    split = SYNTHETIC_CSE_SPLITS[name]
    root = synthetic_root()
    images, ann = synthetic_cse_paths(root, split)
    register_synthetic_mesh(root)
    return {
        "image_root": images,
        "json_file": ann,
        "densepose_transform_src": os.path.join(root, "UV_symmetry_transforms.mat"),
        "evaluator_type": "densepose",
    }


def _make_loader(name: str, paths_fn, hint: str):
    def load():
        paths = paths_fn(name)
        MetadataCatalog.get(name).set(**paths)
        if not os.path.isfile(paths["json_file"]):
            raise FileNotFoundError(
                f"Dataset '{name}': annotation file not found: {paths['json_file']} ({hint}; see datasets/README.md)"
            )
        return load_densepose_coco_json(paths["json_file"], paths["image_root"], name)

    return load


def register_builtin_datasets(replace: bool = True) -> None:
    """(Re-)register the DensePose-COCO and synthetic datasets and their metadata."""
    coco_hint = "set DENSEPOSE_DATASETS (or DETECTRON2_DATASETS) to the folder that holds coco/"
    synth_hint = (
        "generate it with `python tools/generate_synthetic_dataset.py --output <dir>` or "
        "densepose_fnl.data.ensure_synthetic_dataset(), and set DENSEPOSE_SYNTHETIC_ROOT=<dir>"
    )
    for name in DENSEPOSE_COCO_DATASETS:
        if name in DatasetCatalog and not replace:
            continue
        DatasetCatalog.register(name, _make_loader(name, _coco_paths, coco_hint), replace=True)
        MetadataCatalog.get(name).set(thing_classes=["person"], **_coco_paths(name))
    for name in SYNTHETIC_SPLITS:
        if name in DatasetCatalog and not replace:
            continue
        DatasetCatalog.register(name, _make_loader(name, _synthetic_paths, synth_hint), replace=True)
        MetadataCatalog.get(name).set(thing_classes=["person"], **_synthetic_paths(name))
    cse_hint = synth_hint.replace("--output <dir>", "--output <dir> --cse").replace(
        "ensure_synthetic_dataset()", "ensure_synthetic_dataset(cse=True)")
    for name in SYNTHETIC_CSE_SPLITS:
        if name in DatasetCatalog and not replace:
            continue
        DatasetCatalog.register(name, _make_loader(name, _synthetic_cse_paths, cse_hint), replace=True)
        MetadataCatalog.get(name).set(thing_classes=["person"], **_synthetic_cse_paths(name))


def refresh_metadata(name: str) -> None:
    """Re-resolve the paths of a built-in dataset from the current environment."""
    if name in DENSEPOSE_COCO_DATASETS:
        MetadataCatalog.get(name).set(**_coco_paths(name))
    elif name in SYNTHETIC_SPLITS:
        MetadataCatalog.get(name).set(**_synthetic_paths(name))
    elif name in SYNTHETIC_CSE_SPLITS:
        MetadataCatalog.get(name).set(**_synthetic_cse_paths(name))
