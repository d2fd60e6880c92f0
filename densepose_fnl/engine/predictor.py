"""DefaultPredictor: one BGR image in, DensePose results out (detectron2's DefaultPredictor)."""
from typing import Dict

import numpy as np
import torch

from ..checkpoint import DensePoseCheckpointer
from ..data.transforms import ResizeTransform, resize_output_shape
from ..modeling import build_model


class DefaultPredictor:
    """Builds the model of `cfg`, loads MODEL.WEIGHTS (if set), and on each call resizes the image to
    INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (bilinear, as detectron2) and runs inference.

    `__call__(image_bgr HxWx3 uint8) -> {"instances": Instances}` in the image's own pixel coordinates."""

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DensePoseCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.input_format = cfg.INPUT.FORMAT
        self.min_size, self.max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST

    def preprocess(self, image_bgr: np.ndarray) -> Dict:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"Expected an HxWx3 BGR image, got shape {image_bgr.shape}")
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        h, w = image.shape[:2]
        if self.min_size > 0:
            newh, neww = resize_output_shape(h, w, self.min_size, self.max_size)
            image = ResizeTransform(h, w, newh, neww).apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": h, "width": w}

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> Dict:
        return self.model([self.preprocess(image_bgr)])[0]
