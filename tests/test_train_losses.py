"""DensePose chart losses: hand-computed values on tiny predictions (S = 4 grids)."""
import math

import pytest
import torch

from densepose_fnl.config import get_cfg
from densepose_fnl.modeling.losses import DensePoseChartLoss, PointSampler, pack_chart_annotations, resample_segm
from densepose_fnl.modeling.registry import DENSEPOSE_LOSS_REGISTRY
from densepose_fnl.structures import DensePoseChartPredictorOutput, Instances
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative, DensePoseList

S = 4


def _dp(x, y, i, u, v, segm=None):
    return DensePoseDataRelative(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                                 torch.tensor(i), torch.tensor(u, dtype=torch.float32),
                                 torch.tensor(v, dtype=torch.float32), segm)


def _inst(proposals, gts, dps):
    return Instances((100, 100), proposal_boxes=torch.tensor(proposals, dtype=torch.float32),
                     gt_boxes=torch.tensor(gts, dtype=torch.float32),
                     gt_classes=torch.zeros(len(proposals), dtype=torch.long), gt_densepose=DensePoseList(dps))


def _outputs(n, coarse=2, fill=0.0, requires_grad=True):
    def t(c):
        return torch.full((n, c, S, S), fill, requires_grad=requires_grad)

    return DensePoseChartPredictorOutput(t(coarse), t(25), t(25), t(25))


def _loss(w_segm=1.0, w_part=1.0, w_points=1.0, coarse=2):
    return DensePoseChartLoss(heatmap_size=S, w_segm=w_segm, w_part=w_part, w_points=w_points, n_segm_chan=coarse)


def _smooth_l1(d):
    d = abs(d)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_registered_names_and_config_weights():
    cfg = get_cfg()
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    h.INDEX_WEIGHTS, h.PART_WEIGHTS, h.POINT_REGRESSION_WEIGHTS, h.NUM_COARSE_SEGM_CHANNELS = 2.0, 0.3, 0.1, 15
    for name in ("DensePoseChartLoss", "DensePoseChartWithConfidenceLoss"):
        loss = DENSEPOSE_LOSS_REGISTRY.get(name).from_config(cfg)
        assert (loss.w_segm, loss.w_part, loss.w_points, loss.n_segm_chan) == (2.0, 0.3, 0.1, 15)
        assert loss.heatmap_size == h.HEATMAP_SIZE


def test_bilinear_point_mapping_gt_frame_to_proposal_grid():
    # GT box (10, 20)-(50, 60) (40 x 40); proposal (10, 20)-(90, 60): 80 wide, 40 high.
    # point x = 128 (256 frame) -> image x = 10 + 128 * 40 / 256 = 30 -> grid x = 20 * 4 / 80 = 1.0
    # point y = 96 -> image y = 20 + 96 * 40 / 256 = 35 -> grid y = 15 * 4 / 40 = 1.5
    packed = pack_chart_annotations([_inst([[10, 20, 90, 60]], [[10, 20, 50, 60]],
                                           [_dp([128.0], [96.0], [3], [0.5], [0.5])])])
    s = PointSampler.create(packed, (S, S))
    assert (s.x_lo.item(), s.x_hi.item(), s.y_lo.item(), s.y_hi.item()) == (1, 2, 1, 2)
    assert s.w_x.item() == pytest.approx(0.0) and s.w_y.item() == pytest.approx(0.5)
    z = (torch.arange(S)[None, :] + 10 * torch.arange(S)[:, None]).float().expand(1, 25, S, S)  # z = x + 10 y
    assert s.sample(z, packed.i).item() == pytest.approx(1.0 + 15.0)
    assert s.valid.tolist() == [True]


def test_uv_loss_is_summed_smooth_l1_of_true_part_channel_and_drops_points_outside_proposal():
    # GT box == proposal == (0, 0)-(4, 4): 256-frame x maps to grid x * 4 / 256.
    # pt0 (x=96, y=32) -> grid (1.5, 0.5); pt1 (x=224, y=224) -> grid (3.5, 3.5): last cell, hi clamps to 3;
    # pt2 lies in the GT box but outside a proposal narrower than it -> dropped (checked below).
    dps = [_dp([96.0, 224.0], [32.0, 224.0], [5, 7], [0.2, 0.9], [0.4, 0.1])]
    out = _outputs(1)
    with torch.no_grad():
        grid = (0.1 * torch.arange(S)[None, :] + 0.3 * torch.arange(S)[:, None]).float()  # 0.1 x + 0.3 y
        out.u[0, 5] = grid
        out.v[0, 5] = 2 * grid
        out.u[0, 7] = grid
        out.v[0, 7] = -grid
    losses = _loss(w_points=0.5)([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], out)
    u0 = 0.1 * 1.5 + 0.3 * 0.5  # bilinear = plane value
    u1 = 0.1 * 3 + 0.3 * 3  # clamped to the last cell
    want_u = 0.5 * (_smooth_l1(u0 - 0.2) + _smooth_l1(u1 - 0.9))
    want_v = 0.5 * (_smooth_l1(2 * u0 - 0.4) + _smooth_l1(-u1 - 0.1))
    assert losses["loss_densepose_U"].item() == pytest.approx(want_u, rel=1e-5)
    assert losses["loss_densepose_V"].item() == pytest.approx(want_v, rel=1e-5)
    # proposal = left half of the GT box: pt1 (image x = 3.5) falls outside and is dropped
    losses_half = _loss(w_points=0.5)([_inst([[0, 0, 2, 4]], [[0, 0, 4, 4]], dps)], out)
    # pt0: image x 1.5 -> grid 1.5 * 4 / 2 = 3.0 -> lo = hi = 3; y grid 0.5
    u0h = 0.1 * 3 + 0.3 * 0.5
    assert losses_half["loss_densepose_U"].item() == pytest.approx(0.5 * _smooth_l1(u0h - 0.2), rel=1e-5)


def test_fine_part_cross_entropy_at_points():
    dps = [_dp([32.0, 160.0], [32.0, 160.0], [4, 24], [0.5, 0.5], [0.5, 0.5])]  # grid (0.5,0.5), (2.5,2.5)
    out = _outputs(1)
    with torch.no_grad():
        out.fine_segm[0, 4] = 2.0  # everywhere: part 4 has logit 2, the 24 others 0
    losses = _loss(w_part=0.3)([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], out)
    lse = math.log(24 + math.exp(2.0))
    want = 0.3 * 0.5 * ((lse - 2.0) + lse)  # mean over the two points
    assert losses["loss_densepose_I"].item() == pytest.approx(want, rel=1e-5)


def test_resample_segm_nearest_onto_proposal():
    segm = torch.zeros(1, 256, 256, dtype=torch.long)
    segm[0, :, :100] = 3  # left columns: coarse part 3
    box = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    # same box: cells j sample source columns j / 4 * 255 -> 0, 63.75, 127.5, 191.25 -> labels 3, 3, 0, 0
    out = resample_segm(segm, box, box, 4)
    assert out[0].tolist() == [[3, 3, 0, 0]] * 4
    # proposal twice as wide, same origin: the right half lies outside the GT box -> 0 (zero padding)
    wide = torch.tensor([[0.0, 0.0, 80.0, 40.0]])
    out = resample_segm(segm, box, wide, 4)
    assert out[0].tolist() == [[3, 0, 0, 0]] * 4  # source columns 0, 127.5, (outside), (outside)


@pytest.mark.parametrize("channels", [2, 15])
def test_coarse_segm_cross_entropy(channels):
    segm = torch.zeros(256, 256, dtype=torch.long)
    segm[:, :100] = 3
    dps = [_dp([32.0], [32.0], [1], [0.5], [0.5], segm)]
    out = _outputs(1, coarse=channels)
    with torch.no_grad():
        out.coarse_segm[0, 1] = 2.0  # channel 1 logit 2, others 0
    losses = _loss(w_segm=2.0, coarse=channels)([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], out)
    lse = math.log(channels - 1 + math.exp(2.0))
    if channels == 2:  # labels (fg, fg, bg, bg) per row: fg = channel 1
        want = 0.5 * (lse - 2.0) + 0.5 * lse
    else:  # labels (3, 3, 0, 0): logit 0 for both
        want = lse
    assert losses["loss_densepose_S"].item() == pytest.approx(2.0 * want, rel=1e-5)


def test_rows_follow_images_and_instances_without_densepose():
    # image 1: two proposals without DensePose (rows 0, 1); image 2: one with (row 2)
    img1 = _inst([[0, 0, 4, 4], [0, 0, 4, 4]], [[0, 0, 4, 4], [0, 0, 4, 4]], [None, None])
    img2 = _inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], [_dp([32.0], [32.0], [2], [0.0], [0.0])])
    out = _outputs(3)
    with torch.no_grad():
        out.u[:, 2] = torch.tensor([5.0, 7.0, 0.25])[:, None, None]
    losses = _loss()([img1, img2], out)
    assert losses["loss_densepose_U"].item() == pytest.approx(0.5 * 0.25 ** 2)
    losses["loss_densepose_U"].backward()
    g = out.u.grad
    assert g[:2].abs().sum() == 0 and g[2, 2].abs().sum() > 0


@pytest.mark.parametrize("case", ["no_images", "no_field", "all_none", "outside"])
def test_no_usable_points_gives_zero_losses_connected_to_outputs(case):
    out = _outputs(2)
    if case == "no_images":
        proposals = []
    elif case == "no_field":
        proposals = [Instances((10, 10), proposal_boxes=torch.zeros(2, 4), gt_boxes=torch.zeros(2, 4))]
    elif case == "all_none":
        proposals = [_inst([[0, 0, 4, 4]] * 2, [[0, 0, 4, 4]] * 2, [None, None])]
    else:  # every point outside its proposal
        proposals = [_inst([[0, 0, 1, 1]] * 2, [[0, 0, 4, 4]] * 2, [_dp([200.0], [200.0], [1], [0.1], [0.1])] * 2)]
    losses = _loss()(proposals, out)
    assert sorted(losses) == ["loss_densepose_I", "loss_densepose_S", "loss_densepose_U", "loss_densepose_V"]
    total = sum(losses.values())
    assert total.item() == 0.0 and total.requires_grad
    total.backward()
    for t in (out.coarse_segm, out.fine_segm, out.u, out.v):
        assert t.grad is not None and t.grad.abs().sum() == 0


def test_missing_segm_skips_coarse_loss_only():
    dps = [_dp([32.0], [32.0], [1], [0.5], [0.5], None)]
    out = _outputs(1, fill=0.0)
    losses = _loss()([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], out)
    assert losses["loss_densepose_S"].item() == 0.0
    assert losses["loss_densepose_I"].item() == pytest.approx(math.log(25))


# ------------------------------------------------------------------ chart confidences (issue 14)
def _conf_outputs(n, kappa=True, fill=0.0):
    from densepose_fnl.structures import DensePoseChartPredictorOutputWithConfidences

    def t(c, value=fill):
        return torch.full((n, c, S, S), value, requires_grad=True)

    extra = {"sigma_2": t(25, 0.0)}
    if kappa:
        extra.update(kappa_u=t(25, 0.0), kappa_v=t(25, 0.0))
    return DensePoseChartPredictorOutputWithConfidences(t(2), t(25), t(25), t(25), **extra)


def _conf_cfg(kind):
    cfg = get_cfg()
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD
    h.HEATMAP_SIZE = S
    h.UV_CONFIDENCE.ENABLED, h.UV_CONFIDENCE.TYPE, h.UV_CONFIDENCE.EPSILON = True, kind, 0.05
    h.POINT_REGRESSION_WEIGHTS = 0.5
    return cfg


@pytest.mark.parametrize("kind", ["iid_iso", "indep_aniso"])
def test_uv_confidence_loss_is_the_summed_gaussian_nll(kind):
    loss = DENSEPOSE_LOSS_REGISTRY.get("DensePoseChartWithConfidenceLoss").from_config(_conf_cfg(kind))
    assert loss.uv_confidence == kind and loss.uv_confidence_epsilon == 0.05
    # one point at grid (1.5, 0.5) of part 5, GT (0.2, 0.4); u = 0.5, v = 0.1, sigma_2 = 1, kappa = (0.3, -0.2)
    dps = [_dp([96.0], [32.0], [5], [0.2], [0.4])]
    out = _conf_outputs(1, kappa=kind == "indep_aniso")
    with torch.no_grad():
        out.u[0, 5], out.v[0, 5], out.sigma_2[0, 5] = 0.5, 0.1, 1.0
        if kind == "indep_aniso":
            out.kappa_u[0, 5], out.kappa_v[0, 5] = 0.3, -0.2
    losses = loss([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], out)
    assert list(losses) == ["loss_densepose_S", "loss_densepose_I", "loss_densepose_UV"]
    s2 = math.log1p(math.e) + 0.05
    du, dv = 0.3, -0.3
    if kind == "iid_iso":
        nll = 0.5 * (math.log(2 * math.pi) + 2 * math.log(s2) + (du * du + dv * dv) / s2)
    else:
        r2, dr = 0.3 ** 2 + 0.2 ** 2, du * 0.3 + dv * -0.2
        det = s2 * (s2 + r2)
        nll = 0.5 * (math.log(2 * math.pi) + math.log(det) + (du * du + dv * dv) / s2 - dr * dr / det)
    assert losses["loss_densepose_UV"].item() == pytest.approx(0.5 * nll, rel=1e-5)
    losses["loss_densepose_UV"].backward()
    assert out.sigma_2.grad[0, 5].abs().sum() > 0 and out.sigma_2.grad[0, 4].abs().sum() == 0


@pytest.mark.parametrize("kind", ["iid_iso", "indep_aniso"])
def test_uv_confidence_fake_losses_reach_the_confidences(kind):
    loss = DENSEPOSE_LOSS_REGISTRY.get("DensePoseChartWithConfidenceLoss").from_config(_conf_cfg(kind))
    out = _conf_outputs(2, kappa=kind == "indep_aniso")
    losses = loss([], out)
    assert sorted(losses) == ["loss_densepose_I", "loss_densepose_S", "loss_densepose_UV"]
    total = sum(losses.values())
    assert total.item() == 0.0
    total.backward()
    names = ("sigma_2", "kappa_u", "kappa_v") if kind == "indep_aniso" else ("sigma_2",)
    for name in ("u", "v") + names:
        assert getattr(out, name).grad is not None


def test_uv_confidence_loss_needs_the_confidence_outputs():
    loss = DENSEPOSE_LOSS_REGISTRY.get("DensePoseChartWithConfidenceLoss").from_config(_conf_cfg("indep_aniso"))
    dps = [_dp([96.0], [32.0], [5], [0.2], [0.4])]
    with pytest.raises(ValueError, match="kappa_u"):
        loss([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], _conf_outputs(1, kappa=False))


def test_plain_loss_name_ignores_confidences_as_detectron2():
    loss = DENSEPOSE_LOSS_REGISTRY.get("DensePoseChartLoss").from_config(_conf_cfg("iid_iso"))
    assert loss.uv_confidence is None and loss.loss_names[-2:] == ("loss_densepose_U", "loss_densepose_V")
