"""The one image reader: a file -> HxWx3 uint8 (OpenCV decoding; EXIF orientation applied, as detectron2's
PIL-based reader does). Used by the training mapper, apply_net, the exporter's calibration images and
the benchmark."""
import os

import cv2
import numpy as np

__all__ = ["ImageReadError", "read_image"]


class ImageReadError(ValueError):
    """The file exists but is not a decodable image; the message names the file."""


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """HxWx3 uint8 in `format` ("BGR" or "RGB"). A missing file raises FileNotFoundError, an undecodable one
    ImageReadError, each naming the file."""
    if format not in ("BGR", "RGB"):
        raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB', got '{format}'")
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    img = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"Cannot decode image file (corrupt or not an image): {file_name}")
    if format == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img
