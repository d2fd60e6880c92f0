from .box_head import FastRCNNConvFCHead
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference_single_image
from .roi_heads import DensePoseROIHeads, build_roi_heads

__all__ = ["DensePoseROIHeads", "FastRCNNConvFCHead", "FastRCNNOutputLayers", "build_roi_heads",
           "fast_rcnn_inference_single_image"]
