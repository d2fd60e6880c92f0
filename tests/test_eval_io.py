"""Eval data files (missing-file errors, official pickle layout, distance cache), results format,
the detectron2-style evaluator and inference_on_dataset, tools/evaluate_results.py."""
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from densepose_fnl.evaluation import (
    CondensedDistances,
    DensePoseCOCOEvaluator,
    EvalDataMissingError,
    GeodesicEvalData,
    condensed_index,
    decode_iuv,
    decode_uv_data,
    encode_chart_result,
    ensure_pdist_cache,
    inference_on_dataset,
)
from densepose_fnl.evaluation.synthetic_mesh import coco_dataset, densepose_annotation, make_synthetic_mesh, write_eval_data
from densepose_fnl.structures import DensePoseChartPredictorOutput, DensePoseChartResult, Instances

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "densepose_demo" / "example_results.json"
FILES = ("SMPL_subdiv.mat", "SMPL_SUBDIV_TRANSFORM.mat", "Pdist_matrix.pkl")


@pytest.fixture(scope="module")
def mesh():
    return make_synthetic_mesh(grid=5)


@pytest.fixture(scope="module")
def eval_dir(mesh, tmp_path_factory):
    return write_eval_data(mesh, tmp_path_factory.mktemp("eval_data"))


def test_missing_eval_files_are_all_named(tmp_path):
    with pytest.raises(EvalDataMissingError) as e:
        GeodesicEvalData(tmp_path)
    msg = str(e.value)
    assert all(str(tmp_path / f) in msg for f in FILES) and "DensePose" in msg and "eval data" in msg
    (tmp_path / "SMPL_subdiv.mat").write_bytes(b"x")
    with pytest.raises(EvalDataMissingError) as e:
        DensePoseCOCOEvaluator(coco_dataset([], []), tmp_path)
    msg = str(e.value)
    assert "2 of 3" in msg and str(tmp_path / "SMPL_subdiv.mat") not in msg
    assert str(tmp_path / "Pdist_matrix.pkl") in msg and str(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat") in msg


def test_official_file_layout_and_distance_cache(mesh, eval_dir, tmp_path):
    from scipy.io import loadmat

    smpl = loadmat(str(eval_dir / "SMPL_subdiv.mat"))
    n_sub = 24 * 5 * 5
    assert smpl["U_subdiv"].shape == (n_sub, 1) and smpl["Part_ID_subdiv"].shape == (n_sub, 1)
    assert loadmat(str(eval_dir / "SMPL_SUBDIV_TRANSFORM.mat"))["index"].min() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(eval_dir / "Pdist_matrix.pkl", "rb") as f:
            arrays = pickle.load(f, encoding="latin1")  # exactly how the official code reads it
    table = arrays["Pdist_matrix"]
    n = mesh.num_vertices
    assert table.shape == (n * (n - 1) // 2, 1) and table.dtype == np.float32
    # the official getDistancesUV index arithmetic (written for n = 27554) addresses the same entries
    N = 27554
    for i, j in [(0, 1), (5, 3), (n - 1, 0), (17, n - 2)]:
        a, b = (j, i) if j > i else (i, j)
        a, b = N - a - 1, N - b - 1
        k = int((N * N - N) / 2 - ((N * (N - 1) / 2) - (N - a) * ((N - a) - 1) / 2 + b - a - 1) - 1)
        assert k == condensed_index(i, j)
        assert table[k][0] == np.float32(mesh.geodesic[i, j])
    # converted once to a .npy beside it, read entry-wise, rebuilt only when the pickle changes
    npy = ensure_pdist_cache(eval_dir / "Pdist_matrix.pkl")
    assert npy.parent == eval_dir and npy.suffix == ".npy"
    mtime = npy.stat().st_mtime_ns
    assert ensure_pdist_cache(eval_dir / "Pdist_matrix.pkl").stat().st_mtime_ns == mtime
    dist = CondensedDistances(npy)
    idx = np.array([0, 7, len(dist) - 1, 7])
    assert np.array_equal(dist[idx], table[idx, 0])
    # other pickle writers (Python 3 protocols) convert the same way, into a separate cache dir
    src = tmp_path / "Pdist_matrix.pkl"
    with open(src, "wb") as f:
        pickle.dump({"Pdist_matrix": table}, f, protocol=2)
    cached = ensure_pdist_cache(src, cache_dir=tmp_path.parent / "cache")
    assert cached.parent == tmp_path.parent / "cache" and np.array_equal(np.load(cached), table[:, 0])


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="shared demo data not available")
def test_example_results_file_decodes():
    entries = json.loads(EXAMPLE.read_text())
    assert len(entries) == 21
    for e in entries:
        i, u, v = decode_uv_data(e)
        assert e["uv_shape"][0] == 3 and i.shape == u.shape == v.shape == tuple(e["uv_shape"][1:])
        assert i.dtype == np.uint8 and i.max() <= 24
        assert (u[i == 0] == 0).all() and (v[i == 0] == 0).all()  # background carries no UV
        if e["score"] > 0.9:
            assert (i > 0).mean() > 0.25
        assert 0.0 <= u.min() and u.max() <= 1.0 and 0.0 <= v.min() and v.max() <= 1.0
        assert e["uv_shape"][1:] == [int(e["bbox"][3]), int(e["bbox"][2])]
    i, u, v = decode_uv_data(entries[0])
    assert i.shape == (342, 215) and i.max() == 24 and int(i.sum()) == 212502 and u.max() == pytest.approx(246 / 255)


def test_encode_chart_result_roundtrip():
    labels = torch.tensor([[0, 3], [24, 1]])
    uv = torch.tensor([[[0.0, 0.5], [1.0, 0.999]], [[0.0, 0.25], [0.004, 1.0]]])
    entry = encode_chart_result(DensePoseChartResult(labels=labels, uv=uv))
    assert entry["uv_shape"] == [3, 2, 2] and isinstance(entry["uv_data"], str)
    i, u, v = decode_uv_data(entry)
    assert i.tolist() == [[0, 3], [24, 1]]
    assert (u * 255).round().astype(int).tolist() == [[0, 127], [255, 254]]  # x 255, truncated
    assert (v * 255).round().astype(int).tolist() == [[0, 63], [1, 255]]


def _constant_output(n, part, u, v, size=14):
    coarse = torch.zeros(n, 2, size, size)
    coarse[:, 1] = 5.0
    fine = torch.zeros(n, 25, size, size)
    fine[:, part] = 5.0
    uu = torch.zeros(n, 25, size, size)
    vv = torch.zeros(n, 25, size, size)
    uu[:, part], vv[:, part] = u, v
    return DensePoseChartPredictorOutput(coarse, fine, uu, vv)


class _Model(torch.nn.Module):
    """Returns the GT box with a constant chart prediction (part 3, u 0.5, v 0.75) per image."""

    def forward(self, inputs):
        assert not self.training and not torch.is_grad_enabled()
        outs = []
        for inp in inputs:
            box = torch.tensor([[50.0, 40.0, 150.0, 200.0]])
            outs.append({"instances": Instances((inp["height"], inp["width"]), pred_boxes=box, scores=torch.tensor([0.9]),
                                                pred_classes=torch.tensor([0]), pred_densepose=_constant_output(1, 3, 0.5, 0.75))})
        return outs


def test_evaluator_inference_and_results_tool(eval_dir, tmp_path):
    rng = np.random.RandomState(1)
    pts = np.stack([rng.uniform(0, 255, 30), rng.uniform(0, 255, 30), np.full(30, 3), np.full(30, 0.5), np.full(30, 0.75)], 1)
    images = [{"id": k, "width": 320, "height": 240, "file_name": f"{k}.jpg"} for k in (1, 2)]
    gt = coco_dataset(images, [densepose_annotation(k, k, [50, 40, 100, 160], pts) for k in (1, 2)])
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    evaluator = DensePoseCOCOEvaluator(str(gt_path), eval_dir, output_dir=tmp_path / "out")
    loader = [[{"image_id": k, "file_name": f"{k}.jpg", "height": 240, "width": 320}] for k in (1, 2)]
    model = _Model().train()
    res = inference_on_dataset(model, loader, evaluator)
    assert model.training
    assert set(res) == {"bbox", "densepose_gps", "densepose_gpsm", "densepose_segm"}
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    for key in ("densepose_gps", "densepose_gpsm", "densepose_segm"):
        assert res[key]["AP"] == pytest.approx(100.0) and res[key]["AR"] == pytest.approx(100.0)
    written = json.loads((tmp_path / "out" / "coco_densepose_results.json").read_text())
    assert len(written) == 2 and written[0]["uv_shape"] == [3, 160, 100]
    iuv = decode_iuv(written[0])
    assert (iuv[0] == 3).all() and abs(int(iuv[1].mean()) - 127) <= 1 and abs(int(iuv[2].mean()) - 191) <= 1
    # the same file scored by the command-line tool gives the same numbers
    out = tmp_path / "metrics.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_results.py"), "--gt", str(gt_path),
                           "--results", str(tmp_path / "out" / "coco_densepose_results.json"),
                           "--eval-data", str(eval_dir), "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tool = json.loads(out.read_text())
    assert set(tool) == set(res)
    for key in res:
        assert tool[key] == pytest.approx(res[key], nan_ok=True)
    # missing eval data: exit code 2 and the files named
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_results.py"), "--gt", str(gt_path),
                           "--results", str(tmp_path / "out" / "coco_densepose_results.json"),
                           "--eval-data", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Pdist_matrix.pkl" in proc.stderr and "SMPL_subdiv.mat" in proc.stderr
