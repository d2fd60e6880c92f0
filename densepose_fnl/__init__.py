"""densepose_fnl: fast and light DensePose (Mobile Parsing R-CNN) on torch, timm and ONNX Runtime."""

__version__ = "0.1.0"
