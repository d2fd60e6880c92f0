"""COCO-DensePose challenge results format.

Each result is ``{"image_id", "category_id", "bbox": [x, y, w, h], "score", "uv_shape": [3, H, W],
"uv_data": str}``. ``uv_data`` is the base64 text of a PNG image of size W x H whose RGB channels are
(I, U * 255, V * 255) as uint8: part index 0..24, and chart coordinates truncated to 0..255 (the official
``encode_results_for_competition.py`` writes ``np.moveaxis(iuv, 0, -1)`` with PIL and base64-encodes it;
the official evaluator reads it back with PIL, channels first, reshaped to ``uv_shape``, and divides U, V
by 255). H, W are the integer box size (detectron2's truncated XYWH box).
"""
import base64
import io
from typing import Any, Dict, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..structures import DensePoseChartResult


def quantize_chart_result(result: DensePoseChartResult) -> np.ndarray:
    """labels + uv -> uint8 array (3, H, W): I, then U and V scaled by 255 and truncated (detectron2's
    ``quantize_densepose_chart_result``)."""
    labels = torch.as_tensor(result.labels)
    uv = torch.as_tensor(result.uv)
    h, w = labels.shape
    out = torch.zeros([3, h, w], dtype=torch.uint8)
    out[0] = labels.to(torch.uint8)
    out[1:] = (uv.float() * 255).clamp(0, 255).to(torch.uint8)
    return out.cpu().numpy()


def encode_png(iuv: np.ndarray) -> bytes:
    """uint8 array (3, H, W) -> PNG bytes (RGB = I, U, V)."""
    iuv = np.asarray(iuv)
    if iuv.ndim != 3 or iuv.shape[0] != 3 or iuv.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array of shape (3, H, W), got {iuv.dtype} {iuv.shape}")
    stream = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(iuv, 0, -1)), mode="RGB").save(stream, format="png")
    return stream.getvalue()


def decode_png(data: bytes, uv_shape=None) -> np.ndarray:
    """PNG bytes -> uint8 array (3, H, W) (reshaped to uv_shape when given, as the official reader does)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "RGB":
            raise ValueError(f"uv_data PNG must be RGB (I, U, V), got mode {im.mode}")
        arr = np.moveaxis(np.asarray(im, dtype=np.uint8), -1, 0)
    if uv_shape is not None:
        uv_shape = tuple(int(s) for s in uv_shape)
        if int(np.prod(uv_shape)) != arr.size:
            raise ValueError(f"uv_shape {list(uv_shape)} does not match the PNG data of shape {list(arr.shape)}")
        arr = arr.reshape(3, -1).reshape(uv_shape)
    return np.ascontiguousarray(arr)


def encode_iuv(iuv: np.ndarray) -> Dict[str, Any]:
    """uint8 (3, H, W) -> {"uv_shape": [3, H, W], "uv_data": base64 PNG text}."""
    png = encode_png(iuv)
    return {"uv_shape": [int(s) for s in np.asarray(iuv).shape], "uv_data": base64.encodebytes(png).decode("ascii")}


def encode_chart_result(result: DensePoseChartResult) -> Dict[str, Any]:
    """One person's chart result -> the ``uv_shape`` / ``uv_data`` fields of a challenge result entry."""
    return encode_iuv(quantize_chart_result(result))


def decode_uv_data(entry: Union[Dict[str, Any], str, bytes]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A result entry (or its bare uv_data) -> (I uint8 [H, W], U float64 [H, W], V float64 [H, W]),
    U and V in [0, 1] (uint8 / 255 as in the official evaluator)."""
    iuv = decode_iuv(entry)
    return iuv[0], iuv[1] / 255.0, iuv[2] / 255.0


def decode_iuv(entry: Union[Dict[str, Any], str, bytes]) -> np.ndarray:
    """A result entry (or its bare uv_data) -> uint8 array (3, H, W)."""
    uv_shape = None
    if isinstance(entry, dict):
        uv_shape = entry.get("uv_shape")
        entry = entry["uv_data"]
    if isinstance(entry, str):
        entry = entry.encode("ascii")
    return decode_png(base64.decodebytes(entry), uv_shape)
