"""--runtime onnxruntime: apply_net dump / show and train_net --eval-only on an exported model, checked
against the PyTorch run of the same float weights; the one-line errors for unusable model files; the ORT
format file and --ort-provider (the execution provider switch of OrtPredictor, apply_net and benchmark).

One tiny model is calibrated, saved (.pth) and exported (.onnx) per module: the export alone takes most
of this file's time. Test images are resized to 96 px (>= 65 px, so OrtPredictor pads nothing and ORT
must agree with PyTorch up to float rounding)."""
import importlib.util
import json
import shutil
import types

import cv2
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _train_helpers import REPO, TINY_CONFIG, drop_log_handlers, one_thread, tiny_dataset  # noqa: E402,F401

from densepose_fnl.config import load_config  # noqa: E402
from densepose_fnl.data import DatasetCatalog, build_detection_test_loader  # noqa: E402
from densepose_fnl.export import (OrtModel, OrtPredictor, OrtProviderError, compare_instances, export_onnx,  # noqa: E402
                                  write_ort_mobile_files)
from densepose_fnl.modeling import build_model  # noqa: E402
from densepose_fnl.utils.bn_calibration import calibrate_batchnorm  # noqa: E402

# score threshold 0 and a cap of 8 so that even a random-init model has detections to compare
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "8",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128", "DATASETS.TEST", "('densepose_synthetic_val',)"]


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_runtime_under_test", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apply_net = _load_tool("apply_net")
train_net = _load_tool("train_net")
benchmark = _load_tool("benchmark")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Calibrated random-init tiny model: config.yaml (as export_model writes it), model.pth, model.onnx,
    and two synthetic val pictures; DENSEPOSE_SYNTHETIC_ROOT points at the tiny set for the whole module."""
    tmp = tmp_path_factory.mktemp("runtime")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENSEPOSE_SYNTHETIC_ROOT", tiny_dataset(tmp / "synthetic"))
        cfg = load_config(TINY_CONFIG, OPTS)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        batches = list(build_detection_test_loader(cfg, "densepose_synthetic_train"))[:2]
        calibrate_batchnorm(model, lambda: (model(b) for b in batches))
        cfg_file, pth, path = tmp / "config.yaml", tmp / "model.pth", tmp / "model.onnx"
        cfg_file.write_text(cfg.dump())
        torch.save({"model": model.state_dict()}, pth)
        export_onnx(model, str(path), sample_image=batches[0][0]["image"])
        images = tmp / "images"
        images.mkdir()
        for d in DatasetCatalog.get("densepose_synthetic_val")[:2]:
            shutil.copy(d["file_name"], images)
        yield types.SimpleNamespace(cfg=cfg, cfg_file=str(cfg_file), model=model, pth=str(pth), onnx=str(path),
                                    images=images, tmp=tmp)


def _dump(exported, model, out, *extra):
    rc = apply_net.main(["dump", exported.cfg_file, model, str(exported.images), "--output", str(out), *extra])
    assert rc == 0
    return torch.load(out, weights_only=True)


def _assert_same_detections(ref, out, min_iou=0.99):
    """Same count; every box matches a distinct box of the other run (IoU > min_iou) with the same score."""
    from torchvision.ops import box_iou

    assert len(out["scores"]) == len(ref["scores"]) > 0
    iou = box_iou(out["pred_boxes_XYXY"], ref["pred_boxes_XYXY"])
    best, match = iou.max(dim=1)
    assert float(best.min()) > min_iou and len(set(match.tolist())) == len(match)
    assert torch.allclose(out["scores"], ref["scores"][match], atol=1e-3)
    for k, dp in zip(match.tolist(), out["pred_densepose"]):
        ref_labels = ref["pred_densepose"][k]["labels"]
        if dp["labels"].shape == ref_labels.shape:  # int-truncated box sizes can differ by a pixel
            assert (dp["labels"] == ref_labels).float().mean() > 0.95


def test_dump_onnxruntime_matches_the_pytorch_dump_of_the_same_weights(exported, tmp_path):
    ref = _dump(exported, exported.pth, tmp_path / "torch.pkl")
    out = _dump(exported, exported.onnx, tmp_path / "ort.pkl", "--runtime", "onnxruntime")
    assert [e["file_name"] for e in out] == [e["file_name"] for e in ref] and len(out) == 2
    for o, r in zip(out, ref):
        assert o["image_size"] == r["image_size"]
        _assert_same_detections(r, o)
    # --min_score still filters the graph's outputs (its own threshold is 0 here)
    threshold = float(out[0]["scores"].median())
    kept = _dump(exported, exported.onnx, tmp_path / "ort_min.pkl", "--runtime", "onnxruntime",
                 "--min_score", str(threshold))
    assert 0 < len(kept[0]["scores"]) < len(out[0]["scores"])
    for k, o in zip(kept, out):
        above = o["scores"] >= threshold
        assert torch.equal(k["scores"], o["scores"][above])
        assert torch.equal(k["pred_boxes_XYXY"], o["pred_boxes_XYXY"][above])


def test_show_onnxruntime_writes_a_picture_of_the_input_size_and_warns_about_nms(exported, tmp_path, capsys):
    image = sorted(exported.images.iterdir())[0]
    out = tmp_path / "vis.png"
    rc = apply_net.main(["show", exported.cfg_file, exported.onnx, str(image), "bbox,dp_segm", "--output", str(out),
                         "--runtime", "onnxruntime", "--min_score", "0", "--nms_thresh", "0.3"])
    assert rc == 0
    assert cv2.imread(str(out)).shape == cv2.imread(str(image)).shape
    err = capsys.readouterr().err
    assert "apply_net: warning: --nms_thresh: no effect with --runtime onnxruntime" in err


def _not_a_densepose_export(path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))


def _bad_model(exported, tmp_path, case):
    """(runtime, model file, what the message must say) for each unusable model file."""
    if case == "missing":
        return "onnxruntime", str(tmp_path / "nope.onnx"), "model file not found"
    if case == "checkpoint":
        return "onnxruntime", exported.pth, "a PyTorch checkpoint"
    if case == "garbage":
        (tmp_path / "junk.onnx").write_bytes(b"certainly not a protobuf")
        return "onnxruntime", str(tmp_path / "junk.onnx"), "ONNX Runtime cannot load it"
    if case == "other_onnx":
        _not_a_densepose_export(tmp_path / "identity.onnx")
        return "onnxruntime", str(tmp_path / "identity.onnx"), "is not a densepose_fnl export"
    return "pytorch", exported.onnx, "use --runtime onnxruntime"


CASES = ["missing", "checkpoint", "garbage", "other_onnx", "onnx_with_pytorch"]


@pytest.mark.parametrize("case", CASES)
def test_apply_net_unusable_model_file_is_one_line(exported, tmp_path, case, capsys):
    runtime, model, reason = _bad_model(exported, tmp_path, case)
    image = sorted(exported.images.iterdir())[0]
    rc = apply_net.main(["dump", exported.cfg_file, model, str(image), "--output", str(tmp_path / "r.pkl"),
                         "--runtime", runtime])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and not (tmp_path / "r.pkl").exists()
    assert len(err) == 1 and err[0].startswith(f"apply_net: error: {model}") and reason in err[0], err


def _pseudo_ground_truth(model, loader):
    """A COCO json whose people are `model`'s detections. The synthetic people give a random-init model
    0 AP whatever it outputs; on this one it has 100 box AP, and another model too only if it reproduces them."""
    images, annotations = [], []
    for batch in loader:
        d = batch[0]
        images.append({"id": d["image_id"], "height": d["height"], "width": d["width"], "file_name": d["file_name"]})
        for x0, y0, x1, y1 in model(batch)[0]["instances"].pred_boxes.tolist():
            annotations.append({"id": len(annotations) + 1, "image_id": d["image_id"], "category_id": 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


@torch.no_grad()
def test_ort_model_gives_the_pytorch_detections_and_ap_through_inference_on_dataset(exported):
    from densepose_fnl.engine import DefaultTrainer
    from densepose_fnl.evaluation import DensePoseCOCOEvaluator, inference_on_dataset

    cfg = exported.cfg
    loader = DefaultTrainer.build_test_loader(cfg, "densepose_synthetic_val")
    ort_model = OrtModel(exported.onnx, cfg).eval()
    for batch in loader:  # original-image coordinates, as GeneralizedRCNN's postprocessed inference
        ref, out = exported.model(batch)[0]["instances"], ort_model(batch)[0]["instances"]
        assert out.image_size == ref.image_size == (batch[0]["height"], batch[0]["width"])
        assert len(out) == len(ref) > 0
        report = compare_instances(ref, out)
        assert report.ok() and report.min_box_iou > 0.99, report.summary()

    def evaluate(make_evaluator):
        return {name: inference_on_dataset(model, loader, make_evaluator(name))
                for name, model in (("torch", exported.model), ("ort", ort_model))}

    synthetic = evaluate(lambda name: DefaultTrainer.build_evaluator(cfg, "densepose_synthetic_val",
                                                                     str(exported.tmp / name)))
    assert set(synthetic["ort"]) == set(synthetic["torch"]) >= {"bbox", "densepose_gps", "densepose_gpsm"}
    for task in synthetic["torch"]:
        assert synthetic["ort"][task] == pytest.approx(synthetic["torch"][task], abs=0.5, nan_ok=True), task
    pseudo_gt = _pseudo_ground_truth(exported.model, loader)
    pseudo = evaluate(lambda name: DensePoseCOCOEvaluator(pseudo_gt, evaluate_densepose=False))
    assert pseudo["torch"]["bbox"]["AP"] == pytest.approx(100.0)
    assert pseudo["ort"]["bbox"]["AP"] == pytest.approx(100.0, abs=0.5)


def test_train_net_eval_only_onnxruntime_scores_the_same_predictions(exported, tmp_path, capsys):
    def eval_only(runtime, weights, out):
        code = train_net.cli(["--config-file", exported.cfg_file, "--eval-only", "--runtime", runtime,
                              "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(out)])
        assert code == 0, capsys.readouterr().err[-2000:]
        with open(out / "eval_results.json") as f:
            results = json.load(f)["densepose_synthetic_val"]
        with open(out / "inference" / "densepose_synthetic_val" / "coco_densepose_results.json") as f:
            return results, json.load(f)

    ref, ref_preds = eval_only("pytorch", exported.pth, tmp_path / "torch")
    capsys.readouterr()
    out, out_preds = eval_only("onnxruntime", exported.onnx, tmp_path / "ort")
    stdout = capsys.readouterr().out
    assert "densepose_synthetic_val bbox:" in stdout and "densepose_synthetic_val densepose_gps:" in stdout
    for task in ref:
        assert out[task] == pytest.approx(ref[task], abs=0.5, nan_ok=True), task
    # what the AP is computed from: the same detections (a random-init model has 0 AP on any outputs)
    assert len(out_preds) == len(ref_preds) > 0
    for o, r in zip(out_preds, ref_preds):
        assert o["image_id"] == r["image_id"] and o["score"] == pytest.approx(r["score"], abs=1e-3)
        assert o["bbox"] == pytest.approx(r["bbox"], abs=0.5)


@pytest.mark.parametrize("args, reason", [
    ([], "it needs --eval-only"),
    (["--eval-only", "--qat"], "cannot be combined with --qat"),
    (["--eval-only", "--num-gpus", "2"], "runs in one process"),
])
def test_train_net_onnxruntime_command_line_errors_exit_2(exported, tmp_path, args, reason, capsys):
    code = train_net.cli(["--config-file", exported.cfg_file, "--runtime", "onnxruntime", *args,
                          "MODEL.WEIGHTS", exported.onnx, "OUTPUT_DIR", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "train_net.py: error: --runtime onnxruntime" in err and reason in err
    assert not (tmp_path / "out").exists()  # refused before any setup


@pytest.mark.parametrize("case", CASES)
def test_train_net_unusable_model_file_exits_2(exported, tmp_path, case, capsys):
    runtime, model, reason = _bad_model(exported, tmp_path, case)
    code = train_net.cli(["--config-file", exported.cfg_file, "--eval-only", "--runtime", runtime,
                          "MODEL.WEIGHTS", model, "OUTPUT_DIR", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"train_net.py: error: {model}" in err and reason in err, err


def _missing_provider():
    """(short name of a provider ONNX Runtime knows but this build lacks, e.g. "Xnnpack"; available ones)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = next(p for p in ort.get_all_providers() if p not in available)
    return missing[:-len("ExecutionProvider")], available


def test_unavailable_ort_provider_is_a_one_line_error_naming_it_and_the_available_ones(exported, tmp_path, capsys):
    missing, available = _missing_provider()
    expected = f"execution provider {missing!r} is not available in this onnxruntime"
    listing = f"(available: {', '.join(available)})"
    with pytest.raises(OrtProviderError) as info:
        OrtPredictor(exported.onnx, exported.cfg, provider=missing)
    assert expected in str(info.value) and str(info.value).endswith(listing)
    image = sorted(exported.images.iterdir())[0]
    rc = apply_net.main(["dump", exported.cfg_file, exported.onnx, str(image), "--output", str(tmp_path / "r.pkl"),
                         "--runtime", "onnxruntime", "--ort-provider", missing])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not (tmp_path / "r.pkl").exists()
    assert len(err) == 1 and err[0].startswith("apply_net: error: --ort-provider: ONNX Runtime " + expected), err
    assert err[0].endswith(listing)
    rc = apply_net.main(["dump", exported.cfg_file, exported.pth, str(image), "--ort-provider", "CPU"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["apply_net: error: --ort-provider needs --runtime onnxruntime"]
    # the benchmark refuses before exporting anything
    rc = benchmark.main(["--configs", TINY_CONFIG, "--ort-provider", missing, "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --ort-provider: ONNX Runtime " + expected)
    assert not (tmp_path / "cache").exists()


def test_default_provider_and_the_ort_format_file_run_in_apply_net(exported, tmp_path):
    """The CPU provider, by default or named, on the .onnx and on its ORT format file (a real image each):
    the same detections as without --ort-provider."""
    for provider in (None, "CPU", "cpuexecutionprovider"):
        assert OrtPredictor(exported.onnx, exported.cfg, provider=provider).session.get_providers() == [
            "CPUExecutionProvider"]
    ref = _dump(exported, exported.onnx, tmp_path / "ort.pkl", "--runtime", "onnxruntime")
    named = _dump(exported, exported.onnx, tmp_path / "cpu.pkl", "--runtime", "onnxruntime", "--ort-provider", "CPU")
    for r, o in zip(ref, named):
        assert torch.equal(r["scores"], o["scores"]) and torch.equal(r["pred_boxes_XYXY"], o["pred_boxes_XYXY"])
    mobile = write_ort_mobile_files(exported.onnx)
    out = _dump(exported, mobile.ort_path, tmp_path / "ort_format.pkl", "--runtime", "onnxruntime",
                "--ort-provider", "CPU")
    assert [e["file_name"] for e in out] == [e["file_name"] for e in ref] and len(out) == 2
    for r, o in zip(ref, out):
        _assert_same_detections(r, o, min_iou=0.999)
