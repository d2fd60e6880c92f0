"""Image / box transforms and the augmentations that produce them (detectron2 semantics, OpenCV)."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "Transform",
    "NoOpTransform",
    "ResizeTransform",
    "HFlipTransform",
    "TransformList",
    "ResizeShortestEdge",
    "RandomFlip",
    "resize_output_shape",
]


class Transform:
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_box(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) XYXY float -> (N, 4) XYXY."""
        raise NotImplementedError


class NoOpTransform(Transform):
    def apply_image(self, img):
        return img

    def apply_box(self, boxes):
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

    def __repr__(self):
        return "NoOpTransform()"


class ResizeTransform(Transform):
    """(h, w) -> (new_h, new_w), bilinear."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int = cv2.INTER_LINEAR):
        self.h, self.w, self.new_h, self.new_w, self.interp = int(h), int(w), int(new_h), int(new_w), interp

    def apply_image(self, img):
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform expects an image of {(self.h, self.w)}, got {img.shape[:2]}")
        if (self.new_h, self.new_w) == (self.h, self.w):
            return img
        if img.dtype == np.uint8 and self.interp == cv2.INTER_LINEAR:
            # detectron2 resizes uint8 images with PIL's (antialiased) bilinear filter; weights trained
            # with it expect exactly that input
            return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((self.new_w, self.new_h),
                                                                                 Image.BILINEAR))
        return cv2.resize(img, (self.new_w, self.new_h), interpolation=self.interp)

    def apply_box(self, boxes):
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] *= self.new_w / self.w
        b[:, [1, 3]] *= self.new_h / self.h
        return b

    def __repr__(self):
        return f"ResizeTransform(({self.h}, {self.w}) -> ({self.new_h}, {self.new_w}))"


class HFlipTransform(Transform):
    """Mirror left-right an image of width `width`."""

    def __init__(self, width: int):
        self.width = int(width)

    def apply_image(self, img):
        return np.ascontiguousarray(img[:, ::-1])

    def apply_box(self, boxes):
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        x0 = self.width - b[:, 2]
        x1 = self.width - b[:, 0]
        b[:, 0], b[:, 2] = x0, x1
        return b

    def __repr__(self):
        return f"HFlipTransform(width={self.width})"


class TransformList(Transform):
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms: List[Transform] = [t for t in transforms if not isinstance(t, NoOpTransform)]

    def apply_image(self, img):
        for t in self.transforms:
            img = t.apply_image(img)
        return img

    def apply_box(self, boxes):
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        for t in self.transforms:
            b = t.apply_box(b)
        return b

    @property
    def has_hflip(self) -> bool:
        return sum(isinstance(t, HFlipTransform) for t in self.transforms) % 2 == 1

    def __repr__(self):
        return f"TransformList({self.transforms})"


def resize_output_shape(h: int, w: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """detectron2's ResizeShortestEdge.get_output_shape: shortest side -> short_edge, longest <= max_size."""
    scale = short_edge / min(h, w)
    if h < w:
        new_h, new_w = short_edge, scale * w
    else:
        new_h, new_w = scale * h, short_edge
    if max_size > 0 and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeShortestEdge:
    """Resize so the shortest side is one of `short_edge_length` ("choice") or drawn from the closed
    interval [min, max] ("range"), capping the longest side at `max_size`."""

    def __init__(self, short_edge_length, max_size: int = 0, sample_style: str = "range"):
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("range", "choice"):
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'range' or 'choice', got '{sample_style}'")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(
                f"MIN_SIZE_TRAIN_SAMPLING 'range' needs exactly two sizes (min, max), got {short_edge_length}"
            )
        if not short_edge_length:
            raise ValueError("ResizeShortestEdge needs at least one size")
        self.short_edge_length = short_edge_length
        self.max_size = int(max_size)
        self.sample_style = sample_style

    def get_transform(self, h: int, w: int, rng: Optional[np.random.Generator] = None) -> Transform:
        rng = rng if rng is not None else np.random.default_rng()
        if self.sample_style == "range":
            size = int(rng.integers(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(self.short_edge_length[int(rng.integers(len(self.short_edge_length)))])
        if size == 0:
            return NoOpTransform()
        new_h, new_w = resize_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w)


class RandomFlip:
    """Horizontal flip with probability `prob`."""

    def __init__(self, prob: float = 0.5):
        self.prob = float(prob)

    def get_transform(self, h: int, w: int, rng: Optional[np.random.Generator] = None) -> Transform:
        rng = rng if rng is not None else np.random.default_rng()
        return HFlipTransform(w) if rng.random() < self.prob else NoOpTransform()
