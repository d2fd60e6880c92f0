"""detectron2 / DensePose config keys this project accepts (so their YAML files load unchanged) but does not
implement: each must keep its default, and a non-default value is a ConfigError naming the key and why.

Keys of features that are off by a switch which itself errors when turned on are not listed: they are read
when their feature is (CSE: EMBED_SIZE / EMBEDDERS build a CSE model, the loss keys are read by its loss,
DensePoseCseLoss, whose unimplemented cycle losses error when ENABLED). (Chart confidences, UV_CONFIDENCE /
SEGM_CONFIDENCE, are supported: their keys are read.) `tests/test_config_keys.py` walks every default
key and proves it is read by the code or listed here."""
from typing import Any, Dict, Iterator, Tuple

# key, or prefix of a sub-tree -> why it is not supported
UNSUPPORTED: Dict[str, str] = {
    "MODEL.LOAD_PROPOSALS": "precomputed proposals are not supported",
    "DATASETS.PROPOSAL_FILES_TRAIN": "precomputed proposals are not supported",
    "DATASETS.PROPOSAL_FILES_TEST": "precomputed proposals are not supported",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": "precomputed proposals are not supported",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": "precomputed proposals are not supported",
    "MODEL.ANCHOR_GENERATOR.ANGLES": "rotated anchors are not supported",
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": "training the box head on predicted boxes is not supported",
    "MODEL.ROI_BOX_CASCADE_HEAD": "cascade box heads are not supported",
    "MODEL.ROI_MASK_HEAD": "mask heads are not supported",
    "MODEL.ROI_KEYPOINT_HEAD": "keypoint heads are not supported",
    "TEST.KEYPOINT_OKS_SIGMAS": "keypoint heads are not supported",
    "MODEL.SEM_SEG_HEAD": "semantic segmentation heads are not supported",
    "MODEL.PANOPTIC_FPN": "Panoptic FPN is not supported",
    "MODEL.RETINANET": "RetinaNet is not supported (MODEL.META_ARCHITECTURE GeneralizedRCNN only)",
    "MODEL.RESNETS.DEFORM_MODULATED": "deformable convolutions are not supported",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": "deformable convolutions are not supported",
    "INPUT.CROP": "random crop augmentation is not supported",
    "INPUT.MASK_FORMAT": "instance masks are not used",
    "INPUT.ROTATION_ANGLES": "rotation augmentation is not supported",
    "DATALOADER.SAMPLER_TRAIN": "only TrainingSampler is supported",
    "DATALOADER.REPEAT_THRESHOLD": "RepeatFactorTrainingSampler is not supported",
    "DENSEPOSE_EVALUATION.DISTRIBUTED_INFERENCE": "evaluation always runs on every process",
    "DENSEPOSE_EVALUATION.EVALUATE_MESH_ALIGNMENT": "mesh alignment evaluation is not supported",
    "DENSEPOSE_EVALUATION.MESH_ALIGNMENT_MESH_NAMES": "mesh alignment evaluation is not supported",
    "BOOTSTRAP_DATASETS": "bootstrapping on unlabeled data is not supported",
    "BOOTSTRAP_MODEL": "bootstrapping on unlabeled data is not supported",
    "TEST.AUG": "test-time augmentation is not supported",
    "TEST.PRECISE_BN": "precise BN statistics are not supported",
    "VIS_PERIOD": "visualisation during training is not supported (use tools/apply_net.py show)",
    "GLOBAL.HACK": "detectron2's GLOBAL.HACK is not used",
}


def _leaves(node: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def unsupported_reason(key: str) -> str:
    """Why `key` (dotted) is not supported, or '' if it is."""
    for prefix, reason in UNSUPPORTED.items():
        if key == prefix or key.startswith(prefix + "."):
            return reason
    return ""


def unsupported_settings(cfg, defaults) -> Iterator[Tuple[str, Any, str]]:
    """(key, value, reason) for every unsupported key of `cfg` whose value differs from `defaults`."""
    default_values = dict(_leaves(defaults))
    for key, value in _leaves(cfg):
        reason = unsupported_reason(key)
        if reason and key in default_values and _normalize(value) != _normalize(default_values[key]):
            yield key, value, reason


def _normalize(value: Any) -> Any:
    # YAML gives lists where the defaults hold tuples: the same setting
    if isinstance(value, (list, tuple)):
        return tuple(_normalize(v) for v in value)
    return value
