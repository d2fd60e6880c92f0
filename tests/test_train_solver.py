"""Solver: parameter groups, warm-up multi-step LR (and its resume), gradient clipping, AMP on CPU."""
import pytest
import torch
from torch import nn

from densepose_fnl.config import get_cfg
from densepose_fnl.layers import FrozenBatchNorm2d
from densepose_fnl.solver import (
    amp_enabled,
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    lr_at,
)


def _cfg(**solver):
    cfg = get_cfg()
    s = cfg.SOLVER
    s.BASE_LR, s.MAX_ITER, s.STEPS, s.GAMMA = 1.0, 100, (50, 80), 0.1
    s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD = 10, 0.1, "linear"
    for k, v in solver.items():
        setattr(s, k, v)
    return cfg


def _lrs(cfg, n):
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_multistep_values():
    lrs = _lrs(_cfg(), 100)
    # linear warm-up from 0.1 to 1 over iterations 0..10, then 1, x0.1 at 50, x0.01 at 80
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert lrs[10] == pytest.approx(1.0) and lrs[49] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.1) and lrs[79] == pytest.approx(0.1)
    assert lrs[80] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.01)
    assert [lr_at(_cfg(), i) for i in (0, 5, 50, 80)] == pytest.approx([lrs[0], lrs[5], lrs[50], lrs[80]])


def test_constant_warmup_and_no_warmup():
    lrs = _lrs(_cfg(WARMUP_METHOD="constant"), 12)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
    lrs = _lrs(_cfg(WARMUP_ITERS=0), 2)
    assert lrs == pytest.approx([1.0, 1.0])


def test_scheduler_state_resumes_the_schedule():
    cfg = _cfg()
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(52):
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    assert state_sched["last_epoch"] == 52
    opt2 = build_optimizer(cfg, model)
    sched2 = build_lr_scheduler(cfg, opt2)
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(30):
        opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(0.01)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.frozen = FrozenBatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.tied = self.fc  # shared module: its parameters must be counted once
        self.fixed = nn.Parameter(torch.ones(1), requires_grad=False)


def test_param_groups_weight_decay_and_bias_lr():
    cfg = _cfg(BASE_LR=0.5, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, BIAS_LR_FACTOR=2.0, WEIGHT_DECAY_BIAS=0.0,
               MOMENTUM=0.9, NESTEROV=True)
    net = _Net()
    opt = build_optimizer(cfg, net)
    assert isinstance(opt, torch.optim.SGD)
    hp = {}
    for g in opt.param_groups:
        assert g["momentum"] == 0.9 and g["nesterov"] is True
        for p in g["params"]:
            assert id(p) not in hp
            hp[id(p)] = (g["lr"], g["weight_decay"])
    assert hp[id(net.conv.weight)] == (0.5, 1e-4) and hp[id(net.fc.weight)] == (0.5, 1e-4)
    assert hp[id(net.conv.bias)] == (1.0, 0.0) and hp[id(net.fc.bias)] == (1.0, 0.0)
    for p in (net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias):  # norm layers: WEIGHT_DECAY_NORM
        assert hp[id(p)] == (0.5, 0.0)
    assert id(net.fixed) not in hp
    assert len(hp) == 8


def test_cse_embedder_features_and_embeddings_lr_factors():
    from densepose_fnl.modeling.densepose.embedder import Embedder, VertexDirectEmbedder, VertexFeatureEmbedder

    cfg = _cfg(BASE_LR=0.5, WEIGHT_DECAY=1e-4, BIAS_LR_FACTOR=2.0)
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.FEATURES_LR_FACTOR = 0.1
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDING_LR_FACTOR = 3.0
    net = _Net()
    net.embedder = Embedder({"a": VertexFeatureEmbedder(5, 4, 3, train_features=True), "b": VertexDirectEmbedder(6, 3)})
    hp = {id(p): (g["lr"], g["weight_decay"]) for g in build_optimizer(cfg, net).param_groups for p in g["params"]}
    e = net.embedder
    assert hp[id(e.embedder_a.features)] == pytest.approx((0.05, 1e-4))
    assert hp[id(e.embedder_a.embeddings)] == pytest.approx((1.5, 1e-4))
    assert hp[id(e.embedder_b.embeddings)] == pytest.approx((1.5, 1e-4))
    assert hp[id(net.conv.weight)] == (0.5, 1e-4) and hp[id(net.conv.bias)][0] == 1.0  # the rest unchanged


def _grads(values):
    ps = [nn.Parameter(torch.zeros(len(v))) for v in values]
    for p, v in zip(ps, values):
        p.grad = torch.tensor(v, dtype=torch.float32)
    return ps


@pytest.mark.parametrize("kind", ["value", "norm", "full_model"])
def test_gradient_clipping(kind):
    cfg = get_cfg()
    c = cfg.SOLVER.CLIP_GRADIENTS
    c.ENABLED, c.CLIP_TYPE, c.CLIP_VALUE, c.NORM_TYPE = True, kind, 1.0, 2.0
    ps = _grads([[3.0, 4.0], [0.3, -0.4]])
    build_gradient_clipper(cfg)(ps)
    g0, g1 = ps[0].grad.tolist(), ps[1].grad.tolist()
    if kind == "value":  # clamp elements to [-1, 1]
        assert g0 == [1.0, 1.0] and g1 == pytest.approx([0.3, -0.4])
    elif kind == "norm":  # each parameter separately: norm 5 -> 1, norm 0.5 untouched
        assert g0 == pytest.approx([0.6, 0.8], rel=1e-4) and g1 == pytest.approx([0.3, -0.4])
    else:  # one norm over all: sqrt(25 + 0.25) -> 1
        total = (25.25) ** 0.5
        assert g0 == pytest.approx([3 / total, 4 / total], rel=1e-4)
        assert g1 == pytest.approx([0.3 / total, -0.4 / total], rel=1e-4)


def test_clipping_disabled_and_bad_type():
    cfg = get_cfg()
    assert build_gradient_clipper(cfg) is None
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED, cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = True, "bogus"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_gradient_clipper(cfg)


def test_amp_only_on_gpu():
    cfg = get_cfg()
    cfg.SOLVER.AMP.ENABLED = True
    assert amp_enabled(cfg, torch.device("cpu")) is False
    assert amp_enabled(cfg, torch.device("cuda")) is True
    cfg.SOLVER.AMP.ENABLED = False
    assert amp_enabled(cfg, torch.device("cuda")) is False


def test_bad_schedule_settings():
    with pytest.raises(ValueError, match="STEPS"):
        _lrs(_cfg(STEPS=(80, 50)), 1)
    with pytest.raises(NotImplementedError, match="LR_SCHEDULER_NAME"):
        _lrs(_cfg(LR_SCHEDULER_NAME="WarmupCosineLR"), 1)
