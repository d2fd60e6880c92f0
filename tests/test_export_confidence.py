"""ONNX export of the authors' Mobile Parsing R-CNN B-WC2M (chart confidences; calibrated random init, score
threshold 0): the graph contract gains the confidence outputs, and ONNX Runtime gives the same detections,
labels, U / V and confidences as PyTorch (same tolerances as B in test_export_onnx), at several sizes."""
import os

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from densepose_fnl.config import load_config  # noqa: E402
from densepose_fnl.export import OrtPredictor, compare_instances, export_onnx  # noqa: E402
from densepose_fnl.export.tensor_model import OUTPUT_NAMES, output_names  # noqa: E402
from densepose_fnl.modeling import build_model  # noqa: E402
from densepose_fnl.structures import DensePoseChartPredictorOutputWithConfidences  # noqa: E402
from densepose_fnl.utils.bn_calibration import calibrate_batchnorm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "TEST.DETECTIONS_PER_IMAGE", 3, "INPUT.MIN_SIZE_TEST", 160, "INPUT.MAX_SIZE_TEST", 256]
CONFIDENCES = ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def exported(shared_dir, tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(str(shared_dir / "reference" / "authors_configs" / "mobile_parsing_rcnn_b_wc2m_s3x.yaml"), OPTS)
    model = build_model(cfg).eval()
    calib = _image(160, 224, 0)
    calibrate_batchnorm(model, lambda: [model([{"image": calib}])])
    path = str(tmp_path_factory.mktemp("onnx_wc2m") / "model.onnx")
    export_onnx(model, path, sample_image=_image(160, 192, 1)[None])
    return cfg, model, path


def test_graph_outputs_are_the_chart_maps_then_the_confidences(exported):
    cfg, model, path = exported
    assert output_names(model) == OUTPUT_NAMES + CONFIDENCES
    assert tuple(o.name for o in onnx.load(path).graph.output) == OUTPUT_NAMES + CONFIDENCES


def test_ort_fp32_matches_pytorch_with_confidences(exported):
    cfg, model, path = exported
    predictor = OrtPredictor(path, cfg, num_threads=2)
    for k, (h, w) in enumerate([(160, 192), (97, 161), (200, 136)]):
        image = _image(h, w, 10 + k)
        with torch.no_grad():
            ref = model([{"image": image}])[0]["instances"]
        out = predictor.run_tensor(image)
        assert len(ref) == 3
        assert isinstance(out.pred_densepose, DensePoseChartPredictorOutputWithConfidences)
        assert out.pred_densepose.sigma_1 is None
        for name in CONFIDENCES:
            assert getattr(out.pred_densepose, name).shape == getattr(ref.pred_densepose, name).shape
        report = compare_instances(ref, out)
        assert report.ok(), f"{(h, w)}: {report.summary()}"
        assert torch.equal(ref.pred_classes, out.pred_classes)
        assert 0 < report.max_confidence_diff < 0.01, report.summary()


def test_ort_predictor_rejects_outputs_that_are_not_an_export(exported, tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in OUTPUT_NAMES + ("kappa_u", "sigma_2")]
    nodes = [helper.make_node("Identity", ["image"], [n]) for n in OUTPUT_NAMES + ("kappa_u", "sigma_2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="not a densepose_fnl export"):
        OrtPredictor(str(path), exported[0])
