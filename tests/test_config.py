"""Config system: detectron2 keys, _BASE_ inheritance, the authors' YAML files, and clear errors."""
import textwrap
from pathlib import Path

import pytest

from densepose_fnl.config import ConfigError, get_cfg, load_config
from densepose_fnl.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
AUTHORS = ["Base-DensePose-RCNN-FPN", "DensePose-Parsing-RCNN-FPN", "mobile_parsing_rcnn_b_s3x",
           "mobile_parsing_rcnn_b_wc2m_s3x", "mobile_parsing_rcnn_b_cse_s3x"]


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_configs_load_unchanged(shared_dir, name):
    cfg = load_config(str(shared_dir / "reference" / "authors_configs" / f"{name}.yaml"))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    if name.startswith("mobile"):
        assert cfg.MODEL.TIMMNETS.NAME == "spnasnet_100"
        assert tuple(cfg.MODEL.TIMMNETS.OUT_FEATURES) == (1, 2, 3, 4)
        assert cfg.MODEL.ROI_DENSEPOSE_HEAD.DECODER_ISSIMPLE is True  # inherited from the Parsing base
        assert cfg.MODEL.FPN.OUT_CHANNELS == 64
    if name.endswith("cse_s3x"):
        assert cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS.smpl_27554.NUM_VERTICES == 27554
        assert cfg.DENSEPOSE_EVALUATION.TYPE == "cse"


def test_unsupported_variants_fail_clearly(shared_dir):
    # CSE builds (tests/test_model_cse.py); CSE predictors with confidences do not yet
    base = shared_dir / "reference" / "authors_configs"
    off = ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS.smpl_27554.INIT_FILE", ""]
    for name in ("DensePoseEmbeddingWithConfidencePredictor", "DensePoseEmbeddingConfidencePredictor"):
        cfg = load_config(str(base / "mobile_parsing_rcnn_b_cse_s3x.yaml"),
                          off + ["MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME", name])
        with pytest.raises(NotImplementedError, match=f"'{name}': CSE predictors with confidences are not supported"):
            build_model(cfg)


def test_all_project_configs_load():
    files = sorted(REPO.glob("configs/**/*.yaml"))
    assert len(files) >= 30
    for f in files:
        load_config(str(f))


def test_unknown_key_names_key_and_defining_file(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASES: 1\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nSOLVER:\n  BASE_LR: 0.1\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "child.yaml"))
    msg = str(e.value)
    assert "MODEL.ROI_HEADS.NUM_CLASES" in msg and str(tmp_path / "base.yaml") in msg


def test_bad_value_type_and_cli_override(tmp_path):
    (tmp_path / "bad.yaml").write_text(textwrap.dedent("""
        SOLVER:
          MAX_ITER: "many"
    """))
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="command-line.*MODEL.FOO"):
        load_config(None, ["MODEL.FOO", 1])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config(None, ["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.5", "MODEL.TIMMNETS.OUT_FEATURES", "(1, 2)"])
    assert cfg.SOLVER.BASE_LR == 0.5 and tuple(cfg.MODEL.TIMMNETS.OUT_FEATURES) == (1, 2)


def test_bad_registry_name_lists_choices():
    cfg = load_config(str(REPO / "configs/mobile_parsing_rcnn_b.yaml"),
                      ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.ROI_DENSEPOSE_HEAD.NAME", "NoSuchHead"])
    with pytest.raises(KeyError, match="MODEL.ROI_DENSEPOSE_HEAD.NAME.*DensePoseDeepLabHead"):
        build_model(cfg)


def test_defaults_are_detectron2s():
    cfg = get_cfg()
    assert cfg.MODEL.RPN.BBOX_REG_WEIGHTS == (1.0, 1.0, 1.0, 1.0)
    assert cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS == (10.0, 10.0, 5.0, 5.0)
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05 and cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.5
    assert cfg.MODEL.ANCHOR_GENERATOR.OFFSET == 0.0
