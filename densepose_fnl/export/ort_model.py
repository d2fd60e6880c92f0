"""OrtModel: GeneralizedRCNN's inference interface over an exported ONNX file, for evaluation.

`DefaultTrainer.test` / `inference_on_dataset` call `model(batched_inputs)` with the test mapper's dicts
("image": (3, H, W) uint8 already resized to INPUT.MIN_SIZE_TEST in INPUT.FORMAT, "height" / "width":
the original size) and expect `[{"instances": Instances}]` in original-image pixels. OrtModel answers
with the ONNX graph run by ONNX Runtime and the same `detector_postprocess` as GeneralizedRCNN, so box AP
and DensePose AP of an export are computed by exactly the code that scores the PyTorch model
(`tools/train_net.py --eval-only --runtime onnxruntime MODEL.WEIGHTS model.onnx`).

`open_ort_predictor` is the one place that turns "this file cannot be run" into a one-line
`OrtModelError` (missing file, a PyTorch checkpoint, not ONNX at all, an ONNX file that is not a
densepose_fnl export); apply_net and train_net report it as is.
"""
import os
from typing import Dict, List, Optional

import torch
from torch import nn

from ..postprocess import detector_postprocess
from .ort_predictor import OrtPredictor, resolve_provider

PYTORCH_CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".pkl", ".ckpt")
# torch.save writes a zip archive (new format) or a pickle (legacy, and detectron2's model-zoo .pkl)
_PYTORCH_MAGICS = (b"PK\x03\x04", b"\x80")


class OrtModelError(ValueError):
    """The file cannot be run as a densepose_fnl ONNX export; the message is one line naming it."""


def is_pytorch_checkpoint(path: str) -> bool:
    """By extension or first bytes: a zip / pickle is a checkpoint, never an ONNX protobuf."""
    if os.path.splitext(path)[1].lower() in PYTORCH_CHECKPOINT_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return any(head.startswith(m) for m in _PYTORCH_MAGICS)


def open_ort_predictor(onnx_path: str, cfg, num_threads: Optional[int] = None,
                       provider: Optional[str] = None) -> OrtPredictor:
    """OrtPredictor(onnx_path, cfg) or an OrtModelError saying why the file cannot be used (an execution
    provider that is not available: OrtProviderError, raised first, since it is not about the file).

    num_threads defaults to torch's thread count: ONNX Runtime otherwise takes every core whatever
    OMP_NUM_THREADS / torch.set_num_threads say, and a PyTorch-vs-ORT comparison should use the same."""
    resolve_provider(provider)
    hint = "an ONNX file written by tools/export_model.py is needed"
    if not onnx_path:
        raise OrtModelError(f"no model file given: {hint}")
    if not os.path.isfile(onnx_path):
        raise OrtModelError(f"{onnx_path}: model file not found")
    if is_pytorch_checkpoint(onnx_path):
        raise OrtModelError(f"{onnx_path}: a PyTorch checkpoint, not an ONNX model ({hint}; or use --runtime pytorch)")
    try:
        return OrtPredictor(onnx_path, cfg, num_threads=num_threads or torch.get_num_threads(), provider=provider)
    except ValueError as e:  # a valid ONNX file with other outputs
        raise OrtModelError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - onnxruntime's own pybind errors (InvalidProtobuf, Fail, ...)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OrtModelError(f"{onnx_path}: ONNX Runtime cannot load it ({reason})") from e


class OrtModel(nn.Module):
    """Inference-only stand-in for GeneralizedRCNN: `model.eval()`, then `model(batched_inputs)`.

    No parameters: the weights live in the ONNX graph, whose score threshold, NMS and detection cap were
    fixed at export time (the config given here only supplies INPUT.* for OrtPredictor)."""

    def __init__(self, onnx_path: str, cfg, num_threads: Optional[int] = None, provider: Optional[str] = None):
        super().__init__()
        self.onnx_path = onnx_path
        self.predictor = open_ort_predictor(onnx_path, cfg, num_threads, provider)

    def vertex_embeddings(self, mesh_name: str) -> torch.Tensor:
        """A CSE export's (V, D) vertex embeddings (its .vertex_embeddings.npz), for the CSE evaluator."""
        return self.predictor.vertex_embeddings(mesh_name)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            raise RuntimeError("OrtModel runs an exported graph and cannot train; call .eval() first")
        return [self._infer_one(d) for d in batched_inputs]

    def _infer_one(self, d: Dict) -> Dict:
        image = d["image"].cpu().contiguous()  # ONNX Runtime reads the numpy buffer as is
        instances = self.predictor.run_tensor(image)
        h, w = d.get("height", image.shape[-2]), d.get("width", image.shape[-1])
        return {"instances": detector_postprocess(instances, h, w)}

    def extra_repr(self) -> str:
        return f"onnx_path={self.onnx_path!r}"
