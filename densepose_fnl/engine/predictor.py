"""DefaultPredictor: one BGR image in, DensePose results out (detectron2's DefaultPredictor)."""
from typing import Dict

import numpy as np
import torch

from ..checkpoint import DensePoseCheckpointer
from ..data.preprocess import preprocess_bgr_image
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
        return preprocess_bgr_image(image_bgr, self.input_format, self.min_size, self.max_size)

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> Dict:
        return self.model([self.preprocess(image_bgr)])[0]
