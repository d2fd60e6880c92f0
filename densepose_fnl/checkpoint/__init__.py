from .checkpointer import DensePoseCheckpointer

__all__ = ["DensePoseCheckpointer"]
