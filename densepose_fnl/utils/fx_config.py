"""The one private torch tracing switch we rely on, in one place (a torch upgrade that renames or drops it
fails here, with this module's name, instead of in the middle of an export).

`torch.fx.experimental._config.backed_size_oblivious`: while it is on, `torch.export` treats every dynamic
size it traces with (batch, RoI count, H, W of a pyramid level) "size-obliviously": a size seen as >= 2 in
the example input is not assumed to be != 1, so the graph gets no 0 / 1 specialisation and no guard that
would reject size 1. Our captures (quantization/pt2e.py: batch 2, multi-cell levels) and the ONNX export
(export/onnx_export.py) trace with it, so the same graph serves one image, one RoI and 1-cell levels.
tests/test_utils_fx_config.py pins that behaviour.
"""
import contextlib

FLAG = "backed_size_oblivious"


@contextlib.contextmanager
def backed_size_oblivious():
    """Context manager: `torch.fx.experimental._config.backed_size_oblivious = True` inside, the previous
    value restored on exit."""
    import torch.fx.experimental._config as fx_config

    if not hasattr(fx_config, FLAG):
        import torch

        raise RuntimeError(f"torch {torch.__version__}: torch.fx.experimental._config has no '{FLAG}' any more; "
                           "densepose_fnl/utils/fx_config.py needs the new way to trace sizes size-obliviously")
    with fx_config.patch(**{FLAG: True}):
        yield
