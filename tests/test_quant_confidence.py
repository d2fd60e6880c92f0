"""Int8 of chart-confidence models (B-WC2M's confidences on the tiny synthetic config): PT2E QAT keeps the
confidence outputs and the UV NLL through training (gradients reach the confidence layers), converts, and
its int8 ONNX (every transposed conv lowered to int8 convs) has the confidence outputs and runs in ONNX
Runtime through OrtPredictor."""
import copy
import os

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torchao")

from densepose_fnl.config import load_config  # noqa: E402
from densepose_fnl.export import OrtPredictor, export_onnx  # noqa: E402
from densepose_fnl.export.tensor_model import OUTPUT_NAMES  # noqa: E402
from densepose_fnl.modeling import build_model  # noqa: E402
from densepose_fnl.quantization import build_qat_model, convert_qat_model, quantized_parts  # noqa: E402
from densepose_fnl.structures import DensePoseChartPredictorOutputWithConfidences  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "synthetic", "mobile_parsing_rcnn_tiny_synthetic.yaml")
WC2M = ["MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.ENABLED", True, "MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE",
        "indep_aniso", "MODEL.ROI_DENSEPOSE_HEAD.SEGM_CONFIDENCE.ENABLED", True,
        "MODEL.ROI_DENSEPOSE_HEAD.POINT_REGRESSION_WEIGHTS", 0.0005]
CONFIDENCES = ("sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    from densepose_fnl.data import ensure_synthetic_dataset
    from densepose_fnl.data.build import build_detection_train_loader

    root = str(ensure_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_train=4, num_val=2, seed=3,
                                        min_size=64, max_size=96))
    old = os.environ.get("DENSEPOSE_SYNTHETIC_ROOT")
    os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = root
    try:
        cfg = load_config(TINY, ["DATASETS.TEST", "()"] + WC2M)
        it = iter(build_detection_train_loader(cfg))
        out = [next(it) for _ in range(2)]
    finally:
        if old is None:
            os.environ.pop("DENSEPOSE_SYNTHETIC_ROOT", None)
        else:
            os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = old
    return cfg, out


def test_qat_with_confidences_trains_converts_and_exports(batches, tmp_path):
    cfg, data = batches
    torch.manual_seed(0)
    float_model = build_model(cfg)
    model = build_qat_model(cfg, float_model).train()
    assert quantized_parts(model)["roi_heads.densepose_predictor"] == "prepared"
    losses = model(data[0])
    assert "loss_densepose_UV" in losses and "loss_densepose_U" not in losses
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # gradients reach the confidence layers inside the captured predictor graph
    grads = {n: p.grad for n, p in model.roi_heads.densepose_predictor.named_parameters() if p.grad is not None}
    assert grads and sum(float(g.abs().sum()) for g in grads.values()) > 0

    int8 = convert_qat_model(copy.deepcopy(model).eval())
    image = torch.randint(0, 256, (3, 80, 96), dtype=torch.uint8)
    with torch.no_grad():
        ref = int8([{"image": image}])[0]["instances"]
    assert isinstance(ref.pred_densepose, DensePoseChartPredictorOutputWithConfidences)
    path = str(tmp_path / "model_int8.onnx")
    export_onnx(int8, path, sample_image=image[None])
    names = tuple(o.name for o in onnx.load(path).graph.output)
    assert names == OUTPUT_NAMES + CONFIDENCES
    proto = onnx.load(path)
    # all 9 transposed convs of the predictor (4 chart + 5 confidence) run as int8 convs + DepthToSpace
    assert "ConvTranspose" not in {n.op_type for n in proto.graph.node}
    out = OrtPredictor(path, cfg, num_threads=1).run_tensor(image)
    dp = out.pred_densepose
    assert isinstance(dp, DensePoseChartPredictorOutputWithConfidences) and len(dp) == len(out) > 0
    s = cfg.MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE
    for name in CONFIDENCES:
        t = getattr(dp, name)
        assert t.shape[1:] == ((1 if name.endswith("_confidence") else 25), s, s) and torch.isfinite(t).all()
    eps = cfg.MODEL.ROI_DENSEPOSE_HEAD.SEGM_CONFIDENCE.EPSILON
    assert float(dp.fine_segm_confidence.min()) >= eps - 1e-6 and float(dp.coarse_segm_confidence.min()) >= eps - 1e-6
