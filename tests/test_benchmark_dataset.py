"""tools/benchmark.py --dataset (the paper's protocol): the AP of the timed outputs equals the project's
evaluator run directly on the same weights (whole set, and a max-people subset against a filtered copy of
the annotation file), subset sizes from the annotations, the JSON layout and latency statistics, the
frontier plot, and the one-line error of an unknown dataset.

A tiny random-init model (BN calibrated once, saved as MODEL.WEIGHTS so both runs load the same weights),
PyTorch runtime only (an ONNX export of even the tiny model takes ~1 min here); score threshold 0 and many
proposals, so that random boxes still overlap the synthetic people and the box AP is not trivially 0."""
import importlib.util
import json
import logging
import math

import pytest
import torch

from _train_helpers import REPO, TINY_CONFIG, one_thread  # noqa: F401

from densepose_fnl.analysis.benchmark import QUIET_LOGGERS, frontier, people_subsets
from densepose_fnl.checkpoint import DensePoseCheckpointer
from densepose_fnl.config import load_config
from densepose_fnl.data import DatasetCatalog, build_detection_test_loader, ensure_synthetic_dataset
from densepose_fnl.data.datasets.register import register_densepose_coco_json
from densepose_fnl.data.synthetic import synthetic_split_paths
from densepose_fnl.evaluation import inference_on_dataset
from densepose_fnl.evaluation.build import build_evaluator
from densepose_fnl.modeling import build_model
from densepose_fnl.utils.bn_calibration import calibrate_batchnorm

SIZE = 96  # >= 65 px, the export's minimum (the benchmark's calibration / sample sizes)
OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "100",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "1000", "MODEL.RPN.POST_NMS_TOPK_TEST", "300"]


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_dataset_under_test", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = _load_tool("benchmark")


def _cfg(weights, size=SIZE):
    return load_config(TINY_CONFIG, OPTS + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights),
                                            "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", "1333",
                                            "OUTPUT_DIR", ""])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic val set of 6 images (1 or 2 people), a calibrated random-init checkpoint, one benchmark run."""
    tmp = tmp_path_factory.mktemp("bench_dataset")
    with pytest.MonkeyPatch.context() as mp:
        root = ensure_synthetic_dataset(tmp / "syn", num_train=1, num_val=6, seed=3, min_size=64, max_size=80)
        mp.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(root))
        pth = tmp / "model.pth"
        cfg = _cfg("")
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        batches = list(build_detection_test_loader(cfg, "densepose_synthetic_val"))
        calibrate_batchnorm(model, lambda: (model(b) for b in batches))
        torch.save({"model": model.state_dict()}, pth)
        out_json, out_png = tmp / "out" / "bench.json", tmp / "out" / "frontier.png"
        threads = torch.get_num_threads()
        torch.set_num_threads(3)  # not the run's --threads 1: whether the run restores it is seen
        quiet = [logging.getLogger(n) for n in QUIET_LOGGERS]
        levels = [g.level for g in quiet]
        rc = benchmark.main(["--dataset", "densepose_synthetic_val", "--configs", TINY_CONFIG, "--runtimes", "torch",
                             "--sizes", str(SIZE), "112", "--max-people", "1", "2", "--warmup", "1", "--passes", "2",
                             "--gap-ms", "0", "--threads", "1", "--cache-dir", str(tmp / "cache"),
                             "--json", str(out_json), "--plot", str(out_png), "MODEL.WEIGHTS", str(pth), *OPTS])
        assert rc == 0
        after = dict(threads=torch.get_num_threads(), levels=[g.level for g in quiet])
        torch.set_num_threads(threads)
        ann = json.loads(open(synthetic_split_paths(root, "val")[1]).read())
        yield dict(tmp=tmp, pth=pth, ann=ann, result=json.loads(out_json.read_text()), png=out_png, after=after,
                   levels=levels)


def test_an_in_process_run_leaves_threads_and_logging_as_they_were(setup):
    """A test session goes on after a run: a changed thread count changes the rounding of every later test
    (the oracle comparisons), silenced loggers hide every later warning."""
    assert setup["after"] == dict(threads=3, levels=setup["levels"])


def _row(result, size, subset):
    (row,) = [r for r in result["rows"] if r["size"] == size and r["subset"] == subset]
    return row


def _same(a, b):
    """Evaluator results equal (NaN, written as null in the JSON, equals NaN)."""
    assert a.keys() == b.keys()
    for task in a:
        for k, v in b[task].items():
            got = a[task][k]
            assert (got is None and math.isnan(v)) or got == pytest.approx(v, abs=1e-9), (task, k, got, v)


def test_dataset_ap_equals_the_evaluator_run_directly_on_the_same_model(setup):
    cfg = _cfg(setup["pth"])
    model = build_model(cfg).eval()
    DensePoseCheckpointer(model).load(str(setup["pth"]))
    direct = inference_on_dataset(model, build_detection_test_loader(cfg, "densepose_synthetic_val"),
                                  build_evaluator(cfg, "densepose_synthetic_val"))
    row = _row(setup["result"], SIZE, "all")
    assert direct["bbox"]["AP50"] > 0  # random boxes do hit the people: the comparison is not 0 == 0
    assert set(direct) == {"bbox", "densepose_gps", "densepose_gpsm", "densepose_segm"}
    _same(row["results"], direct)

    # the "<= 1 person" subset is the evaluator of a dataset made of those images only
    ann = setup["ann"]
    one = {i["id"] for i in ann["images"]
           if sum(1 for a in ann["annotations"] if a["image_id"] == i["id"] and not a.get("iscrowd")) <= 1}
    sub = {**ann, "images": [i for i in ann["images"] if i["id"] in one],
           "annotations": [a for a in ann["annotations"] if a["image_id"] in one]}
    # beside the set's own annotations, so that the synthetic mesh's eval data is found for it too
    images, ann_file = synthetic_split_paths(setup["tmp"] / "syn", "val")
    path = setup["tmp"] / "syn" / "annotations" / "val_le1.json"
    path.write_text(json.dumps(sub))
    name = "densepose_synthetic_val_le1_under_test"
    register_densepose_coco_json(name, str(path), str(images))
    try:
        direct1 = inference_on_dataset(model, build_detection_test_loader(cfg, name), build_evaluator(cfg, name))
    finally:
        DatasetCatalog.remove(name)
    _same(_row(setup["result"], SIZE, "<=1")["results"], direct1)
    assert direct1["bbox"] != direct["bbox"]  # the subset is really scored on its own ground truth


def test_max_people_subsets_count_the_non_crowd_annotations(setup):
    ann = setup["ann"]
    people = {i["id"]: 0 for i in ann["images"]}
    for a in ann["annotations"]:
        people[a["image_id"]] += 0 if a.get("iscrowd") else 1
    counts = sorted(people.values())
    assert min(counts) == 1 and max(counts) == 2  # the set mixes both, so the subsets differ
    for size in (SIZE, 112):
        for n in (1, 2):
            assert _row(setup["result"], size, f"<={n}")["images"] == sum(c <= n for c in counts)
        assert _row(setup["result"], size, "all")["images"] == len(ann["images"])
    dicts = [{"image_id": 1, "annotations": [{"iscrowd": 0}, {"iscrowd": 1}]},
             {"image_id": 2, "annotations": [{"iscrowd": 0}, {"iscrowd": 0}, {}]}, {"image_id": 3}]
    assert people_subsets(dicts, [0, 1, 2]) == {"all": [1, 2, 3], "<=0": [3], "<=1": [1, 3], "<=2": [1, 3]}


def test_json_layout_and_latency_statistics(setup):
    result = setup["result"]
    assert result["mode"] == "dataset" and result["dataset"] == "densepose_synthetic_val"
    assert result["images"] == 6 and result["sizes"] == [SIZE, 112] and result["max_people"] == [1, 2]
    assert result["passes"] == 2 and isinstance(result["memory_locked"], bool)
    rows = result["rows"]
    assert len(rows) == 2 * 3  # sizes x (all, <=1, <=2), one config, one runtime
    for r in rows:
        assert r["config"] == "mobile_parsing_rcnn_tiny_synthetic" and r["runtime"] == "torch"
        assert min(r["median_ms"], r["mean_ms"]) > 0 and r["median_ms"] <= r["p90_ms"]
        assert r["fps"] == pytest.approx(1e3 / r["mean_ms"])
        assert r["size_mb"] > 0 and r["params"] > 0 and r["detections_per_image"] > 0
        assert set(r["results"]) == {"bbox", "densepose_gps", "densepose_gpsm", "densepose_segm"}
    # the frontier keeps the points that no faster point beats in AP
    assert frontier([(1, 5), (2, 4), (3, 1), (2.5, 0.5), (0.5, 4)]) == [(1, 5), (2, 4), (3, 1)]


def test_frontier_plot_is_a_png(setup):
    data = setup["png"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    h, w = matplotlib.image.imread(str(setup["png"])).shape[:2]
    assert w > 600 and h > 300


def test_unknown_dataset_is_a_one_line_error_naming_it(tmp_path, capsys):
    rc = benchmark.main(["--dataset", "no_such_dataset", "--configs", TINY_CONFIG, "--runtimes", "torch",
                         "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --dataset: unknown dataset 'no_such_dataset'")
    assert "densepose_synthetic_val" in err[0]  # the registered names are listed
    assert not (tmp_path / "cache").exists()  # refused before building anything
