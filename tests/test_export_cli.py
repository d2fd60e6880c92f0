"""tools/export_model.py: bad command lines end on one line with exit code 2, before any work; the export
model is chosen from the checkpoint's kind (package function, read safely)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densepose_fnl.config import load_config
from densepose_fnl.export import build_export_model, is_qat_checkpoint
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
