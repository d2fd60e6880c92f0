"""The model family is the paper's, block for block: parameter counts of Tables 1-3 and the authors' layout."""
import warnings
from pathlib import Path

import pytest

from densepose_fnl.analysis.model_stats import count_parameters, parameters_by_block, state_dict_bytes
from densepose_fnl.config import load_config
from densepose_fnl.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=UserWarning)


def build(config: str, *opts):
    return build_model(load_config(str(REPO / "configs" / config), ["MODEL.TIMMNETS.PRETRAINED", False, *opts]))


def test_mobile_parsing_rcnn_b_blocks_match_authors_implementation():
    model = build("mobile_parsing_rcnn_b.yaml")
    # measured on DensePoseFnL (nn.Parameter only; FrozenBN statistics are buffers)
    assert parameters_by_block(model) == {
        "backbone": 2_691_512, "neck": 147_918, "rpn": 37_903, "box_head": 92_678,
        "densepose_head": 287_360, "densepose_predictor": 92_250}
    assert count_parameters(model) == 3_349_621
    _, saved = state_dict_bytes(model)
    assert abs(saved - 13_879_725) / 13_879_725 < 0.01  # paper: 13.8 MB


def test_state_dict_layout_equals_authors(shared_dir):
    rows = [line.rstrip("\n").split("\t") for line in
            open(shared_dir / "reference" / "authors_mobile_parsing_rcnn_b_state_dict_keys.tsv") if not line.startswith("#")]
    ref = {name: shape for name, shape, _ in rows}
    assert len(ref) == 503
    sd = build("mobile_parsing_rcnn_b.yaml").state_dict()
    assert set(sd) == set(ref)
    assert {k: str(tuple(v.shape)) for k, v in sd.items()} == ref


def test_densepose_rcnn_baseline():
    model = build("densepose_rcnn_R_50_FPN.yaml")
    assert count_parameters(model) == 59_731_247
    assert parameters_by_block(model)["densepose_head"] == 17_698_816


# paper Tables 1-3 (millions); Parsing R-CNN is checked separately below
PAPER = {
    "mobile_parsing_rcnn_a.yaml": 11.35, "ablation/neck_bifpn_256.yaml": 10.53, "ablation/neck_bifpn_112.yaml": 4.41,
    "ablation/neck_bifpn_88.yaml": 3.82, "ablation/neck_bifpn_64.yaml": 3.35, "backbones/A_resnet50.yaml": 33.61,
    "backbones/A_tf_efficientnet_b3.yaml": 16.03, "backbones/A_tf_efficientnet_el.yaml": 17.89,
    "backbones/A_mixnet_xl.yaml": 19.10, "backbones/A_efficientnet_b2.yaml": 13.68, "backbones/A_mixnet_l.yaml": 14.62,
    "backbones/A_tf_efficientnet_em.yaml": 14.57, "backbones/A_efficientnet_b1.yaml": 13.03,
    "backbones/A_tf_efficientnet_cc_b0_4e.yaml": 18.32, "backbones/A_tf_efficientnet_es.yaml": 13.12,
    "backbones/A_mixnet_m.yaml": 12.39, "backbones/A_efficientnet_b0.yaml": 12.10, "backbones/A_mixnet_s.yaml": 11.52,
    "backbones/A_tf_mobilenetv3_large_100.yaml": 12.04, "backbones/A_semnasnet_100.yaml": 10.94,
    "backbones/A_fbnetc_100.yaml": 11.49, "backbones/A_mnasnet_100.yaml": 11.31, "backbones/A_spnasnet_100.yaml": 11.35,
    "backbones/A_tf_mobilenetv3_large_075.yaml": 10.92, "backbones/A_tf_mobilenetv3_large_minimal_100.yaml": 10.48,
    "backbones/A_tf_mobilenetv3_small_100.yaml": 10.07, "backbones/A_tf_mobilenetv3_small_075.yaml": 9.74,
    "backbones/A_tf_mobilenetv3_small_minimal_100.yaml": 9.58,
}


@pytest.mark.parametrize("config,millions", sorted(PAPER.items()))
def test_paper_parameter_counts(config, millions):
    n = count_parameters(build(config)) / 1e6
    assert abs(n - millions) < 0.006 + 1e-9, f"{config}: {n:.3f}M vs paper {millions}M"


def test_parsing_rcnn_matches_authors_code():
    # the authors' own implementation gives 52,653,999 (their measurement); the paper prints 54.36M
    assert count_parameters(build("parsing_rcnn_R_50_FPN.yaml")) == 52_653_999


def test_frozen_stem_and_first_blocks():
    model = build("mobile_parsing_rcnn_b.yaml")
    bottom_up = model.backbone.bottom_up
    frozen = {n for n, p in bottom_up.named_parameters() if not p.requires_grad}
    assert "conv_stem.weight" in frozen and "blocks.1.2.conv_pwl.weight" in frozen
    assert "blocks.2.0.conv_pw.weight" not in frozen
