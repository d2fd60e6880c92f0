"""Live oracle, benchmark: tools/benchmark.py --runtimes torch,reference times the authors' DensePoseFnL (on
detectron2, in a worker of the reference venv) beside our PyTorch model, with the same input, K and weights (the
benchmark's BN-calibrated random init, saved and loaded strictly by the worker): the authors' outputs equal ours
within 1e-4, the table has the "vs reference" column, the ratio is a positive finite number, and the worker is
gone after the run."""
import contextlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/mobile_parsing_rcnn_b_s3x_test_tuned.yaml"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_live_reference", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(peer_python, tmp_path_factory):
    import densepose_fnl.analysis.reference_runtime as rr

    started = []
    original = rr.ReferenceRuntime.__init__

    def spy(self, *a, **k):
        original(self, *a, **k)
        started.append(self)

    tmp = tmp_path_factory.mktemp("bench_reference")
    out = tmp / "bench.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(rr.ReferenceRuntime, "__init__", spy)
        capture = tmp / "stdout.txt"
        with open(capture, "w") as f, contextlib.redirect_stdout(f):
            rc = _load_tool("benchmark").main([
                "--configs", CONFIG, "--runtimes", "torch,reference", "--sizes", "256", "--people", "1",
                "--rounds", "2", "--warmup", "1", "--threads", "1", "--gap-ms", "0", "--no-flops",
                "--cache-dir", str(tmp / "cache"), "--json", str(out), "--reference-python", str(peer_python),
                "MODEL.TIMMNETS.PRETRAINED", "False"])
    assert rc == 0
    return json.loads(out.read_text()), capture.read_text(), started


def test_reference_column_and_matching_outputs(run):
    result, printed, _ = run
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "reference"}
    ref, ours = rows["reference"], rows["torch"]
    assert ref["outputs_match"] is True, ref["outputs_mismatch"]
    assert set(ref["outputs_max_diff"]) == {"boxes", "scores", "coarse_segm", "fine_segm", "u", "v"}
    assert all(d <= 1e-4 for d in ref["outputs_max_diff"].values()), ref["outputs_max_diff"]
    assert ref["authors_config"].endswith("DensePoseFnL/configs/mobile_parsing_rcnn_b_s3x.yaml")
    assert ref["authors_opts"][:4] == ["MODEL.RPN.POST_NMS_TOPK_TEST", "100",
                                       "MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.3"]
    assert ref["params"] == ours["params"] and ref["runs"] == ours["runs"] == 2
    assert ref["rss_mb"] > 100
    ratio = ours["vs_reference"]
    assert math.isfinite(ratio) and ratio > 0 and ratio == pytest.approx(ours["median_ms"] / ref["median_ms"])
    assert ref["vs_reference"] == 1.0
    header = next(line for line in printed.splitlines() if line.startswith("| config |"))
    assert header.rstrip().endswith("| vs ort | vs reference |")
    line = next(ln for ln in printed.splitlines() if ln.startswith(f"| {ours['config']} | torch |"))
    assert line.split("|")[-2].strip() == f"{ratio:.2f}"
    assert "the reference outputs equal ours" in printed and "WARNING" not in printed


def test_worker_closed_after_the_run(run):
    _, _, started = run
    assert len(started) == 1
    assert started[0].proc.poll() == 0  # quit answered, the worker exited cleanly
