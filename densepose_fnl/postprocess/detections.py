"""Network-input coordinates -> original image coordinates (detectron2's `detector_postprocess`)."""
import torch

from ..structures import Instances
from ..structures.boxes import clip_boxes


def detector_postprocess(results: Instances, output_height: int, output_width: int) -> Instances:
    """Rescale `pred_boxes` from the resized network input to the requested output size, clip them to
    the output image and drop boxes that became empty. Other fields follow the kept boxes."""
    in_h, in_w = results.image_size
    scale_x, scale_y = output_width / in_w, output_height / in_h
    out = Instances((output_height, output_width), **results.get_fields())
    if len(results) == 0 or not results.has("pred_boxes"):
        return out
    boxes = results.pred_boxes.clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, output_height, output_width)
    out.pred_boxes = boxes
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    if bool(keep.all()):
        return out
    return out[torch.nonzero(keep).flatten()]
