"""ONNX export of Mobile Parsing R-CNN B (calibrated random init, score threshold 0) and ONNX Runtime
round trips against PyTorch: same detections, same part labels, same U / V, at several input sizes
from one dynamic-H/W file."""
import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from densepose_fnl.config import load_config  # noqa: E402
from densepose_fnl.engine.predictor import DefaultPredictor  # noqa: E402
from densepose_fnl.export import OrtPredictor, compare_instances, export_onnx  # noqa: E402
from densepose_fnl.modeling import build_model  # noqa: E402
from densepose_fnl.utils.bn_calibration import calibrate_batchnorm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B_CONFIG = os.path.join(REPO, "configs", "mobile_parsing_rcnn_b.yaml")
OPTS = ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "TEST.DETECTIONS_PER_IMAGE", 3, "INPUT.MIN_SIZE_TEST", 160, "INPUT.MAX_SIZE_TEST", 256]


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(B_CONFIG, OPTS)
    model = build_model(cfg).eval()
    calib = _image(160, 224, 0)
    calibrate_batchnorm(model, lambda: [model([{"image": calib}])])
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    export_onnx(model, path, sample_image=_image(160, 192, 1)[None])
    return cfg, model, path


def test_ort_fp32_matches_pytorch_at_several_sizes(exported):
    cfg, model, path = exported
    predictor = OrtPredictor(path, cfg, num_threads=2)
    for k, (h, w) in enumerate([(160, 192), (97, 161), (200, 136)]):  # padded / not padded to 32
        image = _image(h, w, 10 + k)
        with torch.no_grad():
            ref = model([{"image": image}])[0]["instances"]
        out = predictor.run_tensor(image)
        assert len(ref) == 3
        report = compare_instances(ref, out)
        assert report.ok(), f"{(h, w)}: {report.summary()}"
        assert torch.equal(ref.pred_classes, out.pred_classes)
        assert report.min_box_iou > 0.99 and report.label_agreement >= 0.99 and report.max_uv_diff < 0.01


def test_ort_predictor_has_default_predictor_interface(exported):
    cfg, model, path = exported
    rng = np.random.default_rng(3)
    image_bgr = rng.integers(0, 256, (120, 170, 3), dtype=np.uint8)  # resized to 160 x 227 inside
    torch_pred = DefaultPredictor.__new__(DefaultPredictor)
    torch_pred.cfg, torch_pred.model = cfg, model
    torch_pred.input_format, torch_pred.min_size, torch_pred.max_size = (
        cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    ref = torch_pred(image_bgr)["instances"]
    out = OrtPredictor(path, cfg)(image_bgr)["instances"]
    assert out.image_size == ref.image_size == (120, 170)
    assert set(out.get_fields()) == set(ref.get_fields())
    assert out.pred_boxes[:, 2].max() <= 170 and out.pred_boxes[:, 3].max() <= 120
    assert compare_instances(ref, out).ok()


def test_onnx_file_properties(exported):
    _, _, path = exported
    model = onnx.load(path)
    onnx.checker.check_model(model)
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset >= 16  # RoiAlign half_pixel (aligned=True) needs opset 16
    assert not os.path.exists(path + ".data") and os.path.getsize(path) <= 14e6
    ops = [n.op_type for n in model.graph.node]
    roi_aligns = [n for n in model.graph.node if n.op_type == "RoiAlign"]
    assert roi_aligns and all(
        any(a.name == "coordinate_transformation_mode" and a.s == b"half_pixel" for a in n.attribute)
        for n in roi_aligns)
    assert "NonMaxSuppression" in ops
    # both NMS are capped inside the op (RPN at POST_NMS_TOPK_TEST, boxes at TEST.DETECTIONS_PER_IMAGE),
    # so ONNX Runtime stops selecting there instead of suppressing all candidates
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    consts.update({i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer})
    caps = sorted(int(consts[n.input[2]]) for n in model.graph.node if n.op_type == "NonMaxSuppression")
    assert caps == [3, 1000]
    assert not {"ScatterElements", "ScatterND"} & set(ops)  # sort / gather pooler, no per-level scatter
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims[2:]] == [True, True]  # dynamic H, W
