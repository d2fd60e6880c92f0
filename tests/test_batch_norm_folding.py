"""Batch norms folded into their convs for eager CPU inference (layers/batch_norm_folding.py)."""
import copy

import pytest
import torch
from torch import nn

from densepose_fnl.layers import batch_norm_folding as folding
from densepose_fnl.layers.batch_norm import FrozenBatchNorm2d, FrozenBatchNormAct2d
from densepose_fnl.layers.batch_norm_folding import find_conv_bn_pairs, fold_batch_norms, folded_pairs


def _randomise(bn: nn.Module, g: torch.Generator) -> nn.Module:
    c = bn.running_mean.numel()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn


class Block(nn.Module):
    """conv -> frozen BN + ReLU, depthwise conv with bias -> torch BN, conv -> BN shared by two calls of
    the same conv, and a residual; `leak`: the second conv's output is also read by an addition (a
    consumer hooks cannot see)."""

    def __init__(self, leak: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = _randomise(FrozenBatchNormAct2d(8, 1e-5, nn.Identity(), nn.ReLU(inplace=True)), g)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=True)
        self.bn2 = _randomise(nn.BatchNorm2d(8), g)
        self.conv3 = nn.Conv2d(8, 4, 1, stride=2)
        self.bn3 = _randomise(FrozenBatchNorm2d(4), g)
        self.leak = leak

    def forward(self, x):
        y = self.bn1(self.conv1(x))
        z = self.conv2(y)
        y = self.bn2(z) + (z if self.leak else y)
        return self.bn3(self.conv3(y)) + self.bn3(self.conv3(y.flip(-1)))


def _bn_calls(monkeypatch):
    calls = []
    for cls in (FrozenBatchNorm2d, nn.BatchNorm2d):
        original = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, x, original=original: calls.append(self) or original(self, x))
    return calls


def test_folds_each_conv_bn_pair_and_skips_the_bn_pass(monkeypatch):
    block = Block().eval()
    x = torch.randn(2, 4, 20, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = block(x)
    pairs = find_conv_bn_pairs(block, lambda: block(x))
    assert {(c, b) for c, b in pairs} == {(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)}
    assert fold_batch_norms(block, lambda: block(x)) == 3 and len(folded_pairs(block)) == 3
    calls = _bn_calls(monkeypatch)
    with torch.no_grad():
        got = block(x)
    assert calls == []  # no BN pass: only bn1's ReLU ran
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert block.state_dict().keys() == Block().state_dict().keys()  # the checkpoint layout is untouched


def test_folding_follows_new_weights_and_stays_off_in_training_and_autograd(monkeypatch):
    block = Block().eval()
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    fold_batch_norms(block, lambda: block(x))
    other = Block()
    _randomise(other.bn2, torch.Generator().manual_seed(9))
    with torch.no_grad():
        other.conv1.weight.mul_(-0.5)
    block.load_state_dict(other.state_dict())
    with torch.no_grad():
        want = other.eval()(x)
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)  # the folded weights were made again
    calls = _bn_calls(monkeypatch)
    out = block(x)  # autograd on trainable weights: conv then BN, gradients reach the conv
    assert len(calls) == 4 and out.requires_grad
    out.sum().backward()
    assert block.conv1.weight.grad is not None and block.conv1.weight.grad.abs().sum() > 0
    calls.clear()
    block.train()
    block(x)
    assert len(calls) == 4
    calls.clear()
    with torch.no_grad(), folding.folding_suspended():
        block.eval()(x)
    assert len(calls) == 4


def test_a_conv_output_read_elsewhere_is_not_folded():
    block = Block(leak=True).eval()
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = block(x)
    # hooks see conv2 -> bn2 only; the folded run differs, so nothing is folded
    assert (block.conv2, block.bn2) in find_conv_bn_pairs(block, lambda: block(x))
    assert fold_batch_norms(block, lambda: block(x)) == 0 and folded_pairs(block) == []
    with torch.no_grad():
        assert torch.equal(block(x), want)


def test_a_conv_read_by_two_modules_is_not_paired():
    conv, bn, other = nn.Conv2d(3, 3, 1), FrozenBatchNorm2d(3), nn.Conv2d(3, 3, 1)
    x = torch.randn(1, 3, 5, 5)
    assert find_conv_bn_pairs(nn.ModuleList([conv, bn, other]), lambda: (bn(conv(x)), other(y := conv(x)), bn(y))) \
        == []


def test_a_deep_copy_folds_with_its_own_batch_norms():
    block = Block().eval()
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    fold_batch_norms(block, lambda: block(x))
    twin = copy.deepcopy(block)
    assert {id(b) for _, b in folded_pairs(twin)} == {id(twin.bn1), id(twin.bn2), id(twin.bn3)}
    with torch.no_grad():
        twin.bn3.running_mean.add_(1.0)
        before = block(x)
        assert not torch.allclose(twin(x), before)
        plain = Block().eval()
        plain.load_state_dict(twin.state_dict())
        torch.testing.assert_close(twin(x), plain(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(block(x), before)


@pytest.mark.parametrize("config", ["mobile_parsing_rcnn_b.yaml"])
def test_a_mobile_model_folds_in_eager_inference_and_export_sees_the_plain_modules(config):
    from pathlib import Path

    from densepose_fnl.config import load_config
    from densepose_fnl.modeling import build_model
    from densepose_fnl.utils.bn_calibration import calibrate_batchnorm

    repo = Path(__file__).resolve().parents[1]
    assert not load_config(str(repo / "configs" / config), []).TEST.FOLD_BATCH_NORM  # opt-in
    cfg = load_config(str(repo / "configs" / config), ["MODEL.TIMMNETS.PRETRAINED", False,
                                                      "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                                                      "TEST.DETECTIONS_PER_IMAGE", 3, "TEST.FOLD_BATCH_NORM", True])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = (torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    calibrate_batchnorm(model, lambda: (model([{"image": image}]) for _ in range(1)))
    assert folded_pairs(model.backbone) == []  # calibration does not fold (its hooks need the plain BNs)
    plain = copy.deepcopy(model)
    plain.fold_batch_norm_inference = False
    with torch.no_grad():
        got = model([{"image": image}])[0]["instances"]
        want = plain([{"image": image}])[0]["instances"]
    n_bn = sum(isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) for m in model.backbone.modules())
    assert len(folded_pairs(model.backbone)) == n_bn > 50  # SPNASNet's and the BiFPN's
    assert folded_pairs(plain.backbone) == []
    # float rounding, amplified by a random-init network (measured 3.5e-5 on scores, 7.5e-4 on U here)
    torch.testing.assert_close(got.pred_boxes, want.pred_boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.scores, want.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pred_densepose.u, want.pred_densepose.u, atol=2e-3, rtol=0)
    assert (got.pred_densepose.u - want.pred_densepose.u).abs().max() > 0  # it did run folded
    # a graph capture runs the modules as they are (the BNs are in it)
    with torch.no_grad():
        exported = torch.export.export(model.backbone, (torch.randn(1, 3, 64, 64),))
    assert any("batch_norm" in str(n.target) for n in exported.graph.nodes)
