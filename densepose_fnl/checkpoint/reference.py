"""The authors' Mobile Parsing R-CNN B architecture (zetyquickly/DensePoseFnL
configs/mobile_parsing_rcnn_b_s3x.yaml with its `_BASE_` chain), as config overrides.

Used by `tools/convert_checkpoint.py` when no --config-file is given and by the tests, so both work
without the YAML files. A test checks these values against the authors' YAML when it is available.
"""
from typing import List, Optional

# MODEL / INPUT keys set by Base-DensePose-RCNN-FPN.yaml <- DensePose-Parsing-RCNN-FPN.yaml
# <- mobile_parsing_rcnn_b_s3x.yaml (last writer wins), except TIMMNETS.PRETRAINED (False: no download)
AUTHORS_B_OPTS: List = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.PIXEL_MEAN", [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD", [58.395, 57.120, 57.375],
    "MODEL.BACKBONE.NAME", "build_timm_bifpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
    "MODEL.TIMMNETS.NAME", "spnasnet_100",
    "MODEL.TIMMNETS.SCRIPTABLE", True,
    "MODEL.TIMMNETS.PRETRAINED", False,
    "MODEL.TIMMNETS.OUT_FEATURES", [1, 2, 3, 4],
    "MODEL.TIMMNETS.NORM", "FrozenBN",
    "MODEL.FPN.IN_FEATURES", ["s1", "s2", "s3", "s5"],
    "MODEL.FPN.OUT_CHANNELS", 64,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 1000,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 512,
    "MODEL.DENSEPOSE_ON", True,
    "MODEL.ROI_HEADS.NAME", "MyDensePoseROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_HEADS.NUM_CLASSES", 1,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC", 0,
    "MODEL.ROI_BOX_HEAD.NUM_CONV", 2,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 64,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 0,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2",
    "MODEL.ROI_DENSEPOSE_HEAD.NAME", "DensePoseDeepLabHead",
    "MODEL.ROI_DENSEPOSE_HEAD.NUM_STACKED_CONVS", 4,
    "MODEL.ROI_DENSEPOSE_HEAD.CONV_HEAD_DIM", 64,
    "MODEL.ROI_DENSEPOSE_HEAD.UP_SCALE", 1,
    "MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE", 64,
    "MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", 32,
    "MODEL.ROI_DENSEPOSE_HEAD.POOLER_SAMPLING_RATIO", 0,
    "MODEL.ROI_DENSEPOSE_HEAD.POOLER_TYPE", "ROIAlignV2",
    "MODEL.ROI_DENSEPOSE_HEAD.NUM_COARSE_SEGM_CHANNELS", 15,
    "MODEL.ROI_DENSEPOSE_HEAD.INDEX_WEIGHTS", 2.0,
    "MODEL.ROI_DENSEPOSE_HEAD.PART_WEIGHTS", 0.3,
    "MODEL.ROI_DENSEPOSE_HEAD.POINT_REGRESSION_WEIGHTS", 0.1,
    "MODEL.ROI_DENSEPOSE_HEAD.DECODER_ON", True,
    "MODEL.ROI_DENSEPOSE_HEAD.DECODER_ISSIMPLE", True,
    "MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NONLOCAL_ON", 0,
    "MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NORM", "",
    "INPUT.FORMAT", "RGB",
    "INPUT.MIN_SIZE_TRAIN", [512, 864],
]


def authors_b_config(opts: Optional[List] = None):
    """Config of the authors' Mobile Parsing R-CNN B (chart-based, s3x), plus optional KEY VALUE overrides."""
    from ..config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_list(list(AUTHORS_B_OPTS))
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg

