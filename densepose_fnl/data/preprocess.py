"""The one image pre-processing of inference: a BGR uint8 photo -> the network input of the model.

Used by `DefaultPredictor`, `OrtPredictor`, the exporter (calibration and sample images) and the
benchmark, so every runtime sees the same pixels: BGR -> INPUT.FORMAT, then the shortest edge resized
to INPUT.MIN_SIZE_TEST (capped by MAX_SIZE_TEST; 0 = no resize) with detectron2's bilinear filter.
Normalisation and padding belong to the model (`modeling.meta_arch.normalize_and_pad`), so they are in
the exported graph too."""
from typing import Dict

import numpy as np
import torch

from .transforms import ResizeTransform, resize_output_shape


def preprocess_bgr_image(image_bgr: np.ndarray, input_format: str, min_size: int, max_size: int) -> Dict:
    """(H, W, 3) uint8 BGR -> {"image": (3, H', W') uint8 tensor in `input_format`, "height": H, "width": W}."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"Expected an HxWx3 BGR image, got {getattr(image_bgr, 'shape', type(image_bgr))}")
    image = image_bgr[:, :, ::-1] if input_format == "RGB" else image_bgr
    h, w = image.shape[:2]
    if min_size > 0:
        new_h, new_w = resize_output_shape(h, w, min_size, max_size)
        image = ResizeTransform(h, w, new_h, new_w).apply_image(np.ascontiguousarray(image))
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return {"image": tensor, "height": h, "width": w}


def preprocess_for_test(image_bgr: np.ndarray, cfg) -> Dict:
    """`preprocess_bgr_image` with the test-time settings of `cfg` (INPUT.FORMAT, MIN/MAX_SIZE_TEST)."""
    return preprocess_bgr_image(image_bgr, cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
