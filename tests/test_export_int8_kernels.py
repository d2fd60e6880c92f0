"""The kernel benchmark (densepose_fnl.export.int8_kernels, tabulated by tools/benchmark_int8_kernels.py) builds its int8 conv exactly in our export's QDQ form (uint8 activations,
symmetric per-channel int8 weights, int32 bias): ONNX Runtime must fuse it into QLinearConv (else the
table would time a float conv) and compute the same function as the float graph, up to quantization."""
import numpy as np
import onnxruntime as ort
import pytest

from densepose_fnl.export import int8_kernels


@pytest.mark.parametrize("cin,cout,k,stride,groups", [(24, 72, 1, 1, 1), (72, 72, 3, 1, 72), (16, 16, 5, 2, 16)])
def test_int8_conv_graph_is_fused_and_matches_the_float_conv(cin, cout, k, stride, groups):
    tool = int8_kernels
    x = np.random.default_rng(0).uniform(-1, 1, (1, cin, 20, 24)).astype(np.float32)
    outs, fused = [], []
    for int8 in (False, True):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(tool.conv_model(cin, cout, k, stride, groups, int8), so,
                                    providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x})[0])
        fused.append(tool.conv_kernel_ms(tool.conv_model(cin, cout, k, stride, groups, int8), x, 1, 3) > 0)
    ref, q = outs
    assert ref.shape == q.shape == (1, cout, (20 - 1) // stride + 1, (24 - 1) // stride + 1)
    # int8 error: a few output quantization steps (2/255) plus input / weight rounding
    assert np.abs(ref - q).max() < 0.05 and np.abs(ref).max() > 0.1
    assert all(fused)


def test_int8_graph_runs_as_qlinearconv():
    import json
    import os
    import tempfile

    tool = int8_kernels
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "p")
    sess = ort.InferenceSession(tool.conv_model(8, 16, 1, 1, 1, True), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.zeros((1, 8, 6, 6), np.float32)})
    with open(sess.end_profiling()) as f:
        ops = {e["args"].get("op_name") for e in json.load(f) if e.get("cat") == "Node"}
    assert "QLinearConv" in ops and "Conv" not in ops
