"""Model blocks, registered by name and built from a config (detectron2 style)."""
from . import backbone, densepose, losses, proposal_generator, roi_heads  # noqa: F401  (register blocks)
from .meta_arch import GeneralizedRCNN, build_model

__all__ = ["GeneralizedRCNN", "build_model"]
