"""The benchmark's reference runtime without the reference peer: the worker protocol's framing (round trip,
truncated stream), the real worker process replying errors and going on (run with this venv's python, which
has no detectron2), the one-line errors of a missing reference python / peer, an unmapped config and a dead
worker (with its stderr), the mapping of our configs to the authors' files, and the output comparison.
The live run against the authors' implementation is tests/reference/test_reference_benchmark.py."""
import importlib.util
import io
import stat
import sys

import numpy as np
import pytest
import torch

from _train_helpers import REPO, TINY_CONFIG

from densepose_fnl.analysis.benchmark import BenchmarkError
from densepose_fnl.analysis.reference_runtime import ReferenceRuntime, authors_config, compare_outputs
from densepose_fnl.analysis.reference_worker import read_message, write_message
from densepose_fnl.structures import Instances
from densepose_fnl.structures.densepose_outputs import DensePoseChartPredictorOutput

B_S3X = str(REPO / "configs" / "mobile_parsing_rcnn_b_s3x.yaml")
TEST_TUNED = str(REPO / "configs" / "mobile_parsing_rcnn_b_s3x_test_tuned.yaml")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_reference_under_test", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_tool("benchmark")


@pytest.fixture
def fake_peer(tmp_path):
    """A peer tree with the authors' config names but no code (DensePoseFnL/configs/*.yaml)."""
    configs = tmp_path / "peer" / "DensePoseFnL" / "configs"
    configs.mkdir(parents=True)
    for name in ("mobile_parsing_rcnn_b_s3x.yaml", "mobile_parsing_rcnn_b_wc2m_s3x.yaml"):
        (configs / name).write_text("MODEL:\n  DEVICE: cpu\n")
    return tmp_path / "peer"


def _script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_framing_round_trip():
    arrays = {"image": np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7),
              "empty": np.zeros((0, 4), np.float32), "ids": np.array([-1, 2**40], np.int64)}
    buf = io.BytesIO()
    write_message(buf, {"cmd": "run", "k": [1, "a"]}, arrays)
    raw = buf.getvalue()
    write_message(buf, {"cmd": "quit"})
    buf.seek(0)
    header, got = read_message(buf)
    assert header == {"cmd": "run", "k": [1, "a"]}
    assert list(got) == list(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k
    assert read_message(buf) == ({"cmd": "quit"}, {})
    with pytest.raises(EOFError):
        read_message(buf)
    with pytest.raises(EOFError, match="stream closed"):  # a message cut in its payload
        read_message(io.BytesIO(raw[:-10]))


def test_authors_config_mapping(fake_peer):
    authors = str(fake_peer / "DensePoseFnL" / "configs" / "mobile_parsing_rcnn_b_s3x.yaml")
    assert authors_config(B_S3X, str(fake_peer)) == (authors, [])
    assert authors_config(authors, str(fake_peer)) == (authors, [])  # the authors' own file: as is
    # test-tuned: the authors' B s3x + its own keys (paper 4.4)
    assert authors_config(TEST_TUNED, str(fake_peer)) == (authors, [
        "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.3", "INPUT.MIN_SIZE_TEST",
        "512"])
    assert authors_config(TINY_CONFIG, str(fake_peer)) is None
    assert authors_config(str(REPO / "configs" / "mobile_parsing_rcnn_b.yaml"), str(fake_peer)) is None


def test_missing_reference_python_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "python"
    with pytest.raises(BenchmarkError, match=f"python not found: {missing}"):
        ReferenceRuntime(str(missing), str(tmp_path))
    # the command line: exit 2 and one line, before any model is built
    rc = benchmark.main(["--configs", B_S3X, "--runtimes", "torch,reference", "--sizes", "96",
                         "--reference-python", str(missing)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("error: reference runtime: python not found"), err


def test_missing_peer_and_unmapped_config(tmp_path, fake_peer, capsys):
    python = _script(tmp_path / "python", "#!/bin/sh\nexit 0\n")
    with pytest.raises(BenchmarkError, match="no reference peer"):
        ReferenceRuntime(python, str(tmp_path / "no_peer"))
    rc = benchmark.main(["--configs", TINY_CONFIG, "--runtimes", "reference", "--sizes", "96",
                         "--reference-python", python, "--reference-peer", str(fake_peer)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert f"no authors' config for {TINY_CONFIG}" in err and "mobile_parsing_rcnn_b_s3x.yaml" in err
    rc = benchmark.main(["--dataset", "x", "--configs", B_S3X, "--runtimes", "reference", "--reference-python",
                         python, "--reference-peer", str(fake_peer)])
    assert rc == 2 and "fixed-K mode" in capsys.readouterr().err


def test_dead_worker_reports_its_stderr(tmp_path, fake_peer):
    python = _script(tmp_path / "python", "#!/bin/sh\necho 'starting' >&2\n"
                                          "echo 'ImportError: no module detectron2' >&2\nexit 3\n")
    ref = ReferenceRuntime(python, str(fake_peer))
    with pytest.raises(BenchmarkError) as info:
        ref.load(B_S3X, [], str(tmp_path / "w.pth"), 1)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("reference worker died (exit 3) during 'load'") and "no module detectron2" in msg
    ref.close()


def test_worker_replies_errors_and_goes_on(fake_peer, tmp_path):
    """The real worker under this venv's python (no detectron2 here): a failed load is an error reply, the
    worker then still answers; quit ends it with exit 0."""
    ref = ReferenceRuntime(sys.executable, str(fake_peer))
    no_peer = r"reference worker, 'load': ModuleNotFoundError: No module named '(densepose|detectron2)'"
    with pytest.raises(BenchmarkError, match=no_peer):
        ref.load(B_S3X, [], str(tmp_path / "w.pth"), 1)
    with pytest.raises(BenchmarkError, match="'run': RuntimeError: run before load"):
        ref.run(torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert ref.rss_mb() > 0
    ref.close()
    assert ref.proc.returncode == 0


def _instances(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    dp = DensePoseChartPredictorOutput(*(torch.rand(n, c, 8, 8, generator=g) for c in (2, 25, 25, 25)))
    return Instances((64, 64), pred_boxes=torch.rand(n, 4, generator=g) * 60, scores=torch.rand(n, generator=g),
                     pred_densepose=dp)


def _as_reference(inst):
    dp = inst.pred_densepose
    return {"boxes": inst.pred_boxes.numpy().copy(), "scores": inst.scores.numpy().copy(),
            **{k: getattr(dp, k).numpy().copy() for k in ("coarse_segm", "fine_segm", "u", "v")}}


def test_compare_outputs():
    ours = _instances()
    theirs = _as_reference(ours)
    theirs["u"] += 5e-5
    problem, diffs = compare_outputs(ours, theirs)
    assert problem is None and set(diffs) == {"boxes", "scores", "coarse_segm", "fine_segm", "u", "v"}
    assert diffs["u"] == pytest.approx(5e-5, rel=1e-2) and diffs["boxes"] == 0
    theirs["fine_segm"][1, 3, 2, 2] += 1e-3
    theirs["boxes"][0, 0] += 0.5
    problem, _ = compare_outputs(ours, theirs)
    assert problem == "boxes max |diff| 0.5; fine_segm max |diff| 0.001"
    theirs = _as_reference(ours)
    theirs["scores"] = theirs["scores"][:1]
    assert compare_outputs(ours, theirs)[0] == "2 detections, reference 1"


def test_eager_only_keys_are_not_given_to_the_reference(fake_peer, tmp_path, monkeypatch):
    """TEST.CHANNELS_LAST / TEST.FOLD_BATCH_NORM choose how our eager inference runs; the authors' config has
    no such keys, so `--runtimes torch,reference TEST.FOLD_BATCH_NORM True` must not break their load."""
    ref = ReferenceRuntime(sys.executable, str(fake_peer))
    sent = []
    monkeypatch.setattr(ref, "_call", lambda header, *a, **k: sent.append(header) or ({"ok": True, "params": 7}, None))
    try:
        assert ref.load(TEST_TUNED, ["TEST.FOLD_BATCH_NORM", True, "MODEL.DEVICE", "cpu", "TEST.CHANNELS_LAST", "True"],
                        str(tmp_path / "w.pth"), 1) == 7
    finally:
        ref.close()
    opts = sent[0]["opts"]
    keys = opts[::2]
    assert "MODEL.DEVICE" in keys and "MODEL.RPN.POST_NMS_TOPK_TEST" in keys  # the CLI's and the config's own
    assert "TEST.FOLD_BATCH_NORM" not in keys and "TEST.CHANNELS_LAST" not in keys
    assert opts[opts.index("MODEL.DEVICE") + 1] == "cpu"
