"""tools/export_model.py: bad command lines end on one line with exit code 2, before any work; the export
model is chosen from the checkpoint's kind (package function, read safely); --ort-format writes ONNX Runtime
Mobile files that run like the .onnx."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densepose_fnl.config import load_config
from densepose_fnl.export import (OrtPredictor, build_export_model, compare_instances, is_qat_checkpoint,
                                  ort_format_differences)
from densepose_fnl.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "synthetic" / "mobile_parsing_rcnn_tiny_synthetic.yaml")


def _export(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "export_model.py"), "--config-file", TINY, *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["output_under_a_file", "missing_sample", "corrupt_sample"])
def test_bad_command_lines_are_one_line_errors(tmp_path, case):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    output, extra, expected = str(tmp_path / "out"), [], ""
    if case == "output_under_a_file":
        output, expected = str(blocker / "out"), f"error: --output {blocker / 'out'}: cannot create the directory"
    elif case == "missing_sample":
        extra, expected = ["--sample-image", str(tmp_path / "missing.jpg")], "error: --sample-image not found"
    else:
        extra, expected = ["--sample-image", str(corrupt)], f"error: Cannot decode image file (corrupt or not an image): {corrupt}"
    proc = _export("--output", output, *extra, "MODEL.TIMMNETS.PRETRAINED", "False")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)


def test_qat_checkpoint_needs_int8_and_float_checkpoint_is_not_qat(tmp_path):
    cfg = load_config(TINY, ["MODEL.TIMMNETS.PRETRAINED", "False"])
    path = tmp_path / "float.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    assert not is_qat_checkpoint(str(path))
    cfg.MODEL.WEIGHTS = str(path)
    model, kind = build_export_model(cfg, False, [])
    assert kind == "float32" and not model.training
    qat_like = tmp_path / "qat.pth"
    torch.save({"model": {"backbone.gm.conv.weight": torch.zeros(1)}}, qat_like)
    assert is_qat_checkpoint(str(qat_like))
    cfg.MODEL.WEIGHTS = str(qat_like)
    with pytest.raises(ValueError, match="is a QAT checkpoint: export it with --int8"):
        build_export_model(cfg, False, [])


def test_ort_format_export_writes_ort_files_that_run_like_the_onnx(tmp_path):
    """fp32 export with --ort-format (the int8 .ort: test_quant_pt2e): the .ort loads in the installed ONNX
    Runtime and gives the .onnx's outputs on a real (synthetic val) image, through OrtPredictor too; the
    config is what ONNX Runtime's reduced-build parser reads, with types, and names no x86-only NCHWc op."""
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    from densepose_fnl.data import ensure_synthetic_dataset
    from densepose_fnl.data.image_io import read_image
    from densepose_fnl.data.preprocess import preprocess_for_test

    root = Path(ensure_synthetic_dataset(tmp_path / "syn", num_train=1, num_val=2, seed=3, min_size=96, max_size=128))
    sample, other = sorted(str(p) for p in (root / "val").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    opts = ["MODEL.TIMMNETS.PRETRAINED", "False", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "TEST.DETECTIONS_PER_IMAGE", "8", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]
    proc = _export("--output", str(out), "--ort-format", "--sample-image", sample, *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    onnx_path, ort_path = out / "model.onnx", out / "model.ort"
    config = out / "model.required_operators_and_types.config"
    assert onnx_path.is_file() and ort_path.is_file() and config.is_file()
    assert ort_path.read_bytes()[4:8] == b"ORTM"  # the ORT format's flatbuffer file identifier
    assert "verify (.ort vs .onnx, ONNX Runtime): max |diff| boxes" in proc.stdout and "-> OK" in proc.stdout

    cfg = load_config(str(out / "config.yaml"))
    image = preprocess_for_test(read_image(other), cfg)["image"]
    diffs = ort_format_differences(str(onnx_path), str(ort_path), image[None].numpy())
    assert diffs["classes"] == 0 and diffs["boxes"] < 1e-3 and diffs["scores"] < 1e-4, diffs
    # float rounding only: the x86 .onnx session runs NCHWc conv kernels, the ARM-targeted .ort does not
    assert max(diffs[k] for k in ("coarse_segm", "fine_segm", "u", "v")) < 1e-2, diffs
    bgr = read_image(other)
    ref, got = OrtPredictor(str(onnx_path), cfg)(bgr)["instances"], OrtPredictor(str(ort_path), cfg)(bgr)["instances"]
    assert len(got) == len(ref) == 8
    report = compare_instances(ref, got)
    assert report.ok() and report.min_box_iou > 0.999 and report.label_agreement > 0.99, report.summary()

    required, type_filter = parse_config(str(config), enable_type_reduction=True)
    ops = {op for opsets in required.values() for names in opsets.values() for op in names}
    assert {"Conv", "RoiAlign", "NonMaxSuppression", "TopK", "ConvTranspose"} <= ops, ops
    assert type_filter is not None  # per-operator types for --enable_reduced_operator_type_support
    assert "com.microsoft.nchwc" not in required
