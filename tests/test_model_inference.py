"""Inference on CPU: well-formed per-person results for any image size, empty results without errors,
and the detectron2 semantics the weights depend on."""
import math
from pathlib import Path

import pytest
import torch
from torchvision.ops import roi_align

from densepose_fnl.config import load_config
from densepose_fnl.modeling import build_model
from densepose_fnl.modeling.box_regression import Box2BoxTransform
from densepose_fnl.modeling.poolers import ROIPooler, assign_boxes_to_levels
from densepose_fnl.modeling.proposal_generator.anchor_generator import DefaultAnchorGenerator
from densepose_fnl.postprocess import chart_labels_and_uv, densepose_chart_results
from densepose_fnl.utils.bn_calibration import calibrate_batchnorm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_b():
    torch.manual_seed(0)
    cfg = load_config(str(REPO / "configs/mobile_parsing_rcnn_b.yaml"),
                      ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                       "TEST.DETECTIONS_PER_IMAGE", 5, "MODEL.RPN.POST_NMS_TOPK_TEST", 50])
    model = build_model(cfg).eval()
    calib = [{"image": (torch.rand(3, 96, 128) * 255).to(torch.uint8)}]
    calibrate_batchnorm(model, lambda: (model(calib) for _ in range(1)))
    return model


@pytest.mark.parametrize("hw", [(97, 131), (160, 90), (64, 64)])
def test_results_are_well_formed_for_any_size(model_b, hw):
    h, w = hw
    image = (torch.rand(3, h, w) * 255).to(torch.uint8)
    with torch.no_grad():
        out = model_b([{"image": image, "height": 2 * h, "width": 2 * w}])
    inst = out[0]["instances"]
    assert inst.image_size == (2 * h, 2 * w)
    n = len(inst)
    assert 1 <= n <= 5
    boxes = inst.pred_boxes
    assert boxes.shape == (n, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 2 * w).all() and (boxes[:, 3] <= 2 * h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert torch.all(inst.scores[:-1] >= inst.scores[1:]) and ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert (inst.pred_classes == 0).all()
    dp = inst.pred_densepose
    assert dp.coarse_segm.shape == (n, 15, 64, 64)
    assert dp.fine_segm.shape == dp.u.shape == dp.v.shape == (n, 25, 64, 64)
    results = densepose_chart_results(boxes, dp)
    for box, r in zip(boxes, results):
        bw, bh = int(box[2] - box[0]), int(box[3] - box[1])  # XYWH truncated as detectron2's make_int_box
        assert r.labels.shape == (max(bh, 1), max(bw, 1)) and r.uv.shape == (2, max(bh, 1), max(bw, 1))
        assert r.labels.min() >= 0 and r.labels.max() <= 24
        assert (r.uv[:, r.labels == 0] == 0).all()


def test_no_detection_is_an_empty_result(model_b):
    model_b.roi_heads.box_predictor.test_score_thresh = 1.0  # nothing can pass
    try:
        with torch.no_grad():
            inst = model_b([{"image": torch.zeros(3, 70, 90, dtype=torch.uint8)}])[0]["instances"]
    finally:
        model_b.roi_heads.box_predictor.test_score_thresh = 0.0
    assert len(inst) == 0 and inst.pred_boxes.shape == (0, 4)
    assert inst.pred_densepose.fine_segm.shape == (0, 25, 64, 64)
    assert densepose_chart_results(inst.pred_boxes, inst.pred_densepose) == []


def test_inference_is_deterministic(model_b):
    image = (torch.rand(3, 80, 112) * 255).to(torch.uint8)
    with torch.no_grad():
        a = model_b([{"image": image}])[0]["instances"]
        b = model_b([{"image": image}])[0]["instances"]
    assert torch.equal(a.pred_boxes, b.pred_boxes) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_densepose.u, b.pred_densepose.u)


def test_anchors_are_detectron2s():
    gen = DefaultAnchorGenerator([[32], [64]], [[0.5, 1.0, 2.0]], strides=[4, 8])
    anchors = gen([torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 1)])
    assert anchors[0].shape == (2 * 3 * 3, 4) and anchors[1].shape == (3, 4)
    w = math.sqrt(32 * 32 / 0.5)
    h = 0.5 * w
    assert torch.allclose(anchors[0][0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    # location-major: anchor 3 is the first cell anchor shifted by one stride in x
    assert torch.allclose(anchors[0][3], anchors[0][0] + torch.tensor([4.0, 0, 4.0, 0]))
    assert torch.allclose(anchors[0][9], anchors[0][0] + torch.tensor([0, 4.0, 0, 4.0]))


def test_box_decoding_clamps_scale():
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[10.0, 0.0, 5 * 100.0, 0.0]])  # dx = 1 box width, dw huge
    out = t.apply_deltas(deltas, boxes)[0]
    width = 10 * 1000.0 / 16
    assert torch.allclose(out, torch.tensor([15 - width / 2, 0.0, 15 + width / 2, 20.0]))
    target = torch.tensor([[2.0, 3.0, 9.0, 15.0]])
    assert torch.allclose(t.apply_deltas(t.get_deltas(boxes, target), boxes), target, atol=1e-5)


def test_pooler_levels_and_order():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 300, 300], [0, 0, 150, 150], [5, 5, 60, 70.0]])
    assert assign_boxes_to_levels(boxes, 2, 5).tolist() == [0, 2, 1, 0]
    feats = [torch.randn(1, 4, 64, 64), torch.randn(1, 4, 32, 32), torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    pooler = ROIPooler(7, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 0, "ROIAlignV2")
    out = pooler(feats, [boxes])
    rois = torch.cat([torch.zeros(4, 1), boxes], 1)
    for k, level in enumerate([0, 2, 1, 0]):
        expect = roi_align(feats[level], rois[k:k + 1], 7, 1 / 4 / 2**level, 0, aligned=True)
        assert torch.allclose(out[k:k + 1], expect)


def test_coarse_segmentation_masks_fine_labels():
    coarse = torch.zeros(2, 4, 4)
    coarse[1, :, 2:] = 5.0  # foreground only in the right half
    fine = torch.zeros(25, 4, 4)
    fine[7] = 3.0  # part 7 everywhere
    u = torch.rand(25, 4, 4)
    v = torch.rand(25, 4, 4)
    labels, uv = chart_labels_and_uv(coarse, fine, u, v, 4, 4)
    assert labels[:, :2].eq(0).all() and labels[:, 2:].eq(7).all()
    assert torch.allclose(uv[0][:, 2:], u[7][:, 2:]) and uv[:, :, :2].eq(0).all()


def test_capped_batched_nms_keeps_the_first_boxes_of_the_uncapped_one():
    from densepose_fnl.layers import batched_nms

    g = torch.Generator().manual_seed(5)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 60], dim=1)
    scores = torch.rand(300, generator=g)
    levels = torch.randint(0, 3, (300,), generator=g)
    full = batched_nms(boxes, scores, levels, 0.5)
    assert 40 < len(full) < 300  # suppression happened, and there is something to cap
    for k in (0, 1, 37, len(full), len(full) + 5):
        assert torch.equal(batched_nms(boxes, scores, levels, 0.5, max_keep=k), full[:k])


def test_anchors_at_selected_indices_equal_the_full_grid():
    from densepose_fnl.modeling.proposal_generator.anchor_generator import DefaultAnchorGenerator

    gen = DefaultAnchorGenerator([[32], [64]], [[0.5, 1.0, 2.0]], [4, 8], offset=0.5)
    feats = [torch.zeros(1, 8, 13, 21), torch.zeros(1, 8, 7, 11)]
    full = gen(feats)
    for level, f in enumerate(feats):
        idx = torch.randperm(full[level].shape[0], generator=torch.Generator().manual_seed(level))[:50]
        assert torch.equal(gen.anchors_at(level, f, idx), full[level][idx])


def test_threaded_roi_align_equals_torchvisions_bit_for_bit():
    from densepose_fnl.layers import eager_threads, roi_align as threaded

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 40, 56, generator=g).contiguous(memory_format=torch.channels_last)
    n = 4 * threaded.MIN_ROIS_PER_THREAD + 3  # uneven parts
    xy = torch.rand(n, 2, generator=g) * torch.tensor([200.0, 150.0])
    rois = torch.cat([torch.randint(0, 2, (n, 1), generator=g).float(), xy,
                      xy + 5 + 80 * torch.rand(n, 2, generator=g)], 1)
    want = roi_align(x, rois, (7, 7), 0.25, 0, True)
    threads, pool = torch.get_num_threads(), eager_threads._pool
    torch.set_num_threads(2)  # the split needs >= 2 intra-op threads
    try:
        eager_threads._pool = None
        assert torch.equal(threaded.threaded_roi_align(x, rois, (7, 7), 0.25, 0, True), want)
        assert eager_threads._pool is not None  # it did split
        # with autograd it is torchvision's one call: same gradients as training always had
        xg = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(threaded.threaded_roi_align(xg, rois, (7, 7), 0.25, 0, True).square().sum(), xg)
    finally:
        torch.set_num_threads(threads)
        eager_threads._pool = pool
    xg = x.detach().requires_grad_()
    (grad_want,) = torch.autograd.grad(roi_align(xg, rois, (7, 7), 0.25, 0, True).square().sum(), xg)
    assert torch.equal(grad, grad_want)


def _awkward_rois(g, n_images=2):
    """RoIs in (image, x0, y0, x1, y1) on a 56 x 40 map at scale 1/4: random ones plus sub-pixel, empty,
    reversed, partly and wholly outside the map, and long thin ones (large sampling grids)."""
    xy = torch.rand(60, 2, generator=g) * torch.tensor([200.0, 150.0])
    boxes = torch.cat([xy, xy + 1 + 90 * torch.rand(60, 2, generator=g)], 1)
    special = torch.tensor([[10.0, 10.0, 10.5, 10.3], [30.0, 30.0, 30.0, 30.0], [50.0, 60.0, 40.0, 45.0],
                            [-40.0, -30.0, 20.0, 25.0], [190.0, 130.0, 260.0, 200.0], [-90.0, -90.0, -20.0, -20.0],
                            [300.0, 10.0, 340.0, 50.0], [0.0, 0.0, 224.0, 160.0], [5.0, 2.0, 9.0, 158.0],
                            [2.0, 70.0, 222.0, 74.0]])
    boxes = torch.cat([boxes, special])
    return torch.cat([torch.randint(0, n_images, (len(boxes), 1), generator=g).float(), boxes], 1)


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 0), (False, 0), (True, 2), (False, 3)])
def test_roi_align_bags_equals_torchvisions(aligned, sampling_ratio):
    from densepose_fnl.layers.roi_align import roi_align_bags

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 40, 56, generator=g).contiguous(memory_format=torch.channels_last)
    rois = _awkward_rois(g)
    want = roi_align(x, rois, (7, 5), 0.25, sampling_ratio, aligned)
    values, order = roi_align_bags(x, rois, (7, 5), 0.25, sampling_ratio, aligned)
    assert sorted(order.tolist()) == list(range(len(rois)))
    got = torch.empty_like(values)
    got[order] = values
    got = got.reshape(len(rois), 7, 5, 8).permute(0, 3, 1, 2)
    assert want.abs().amax() > 1 and want[-10:].abs().amax((1, 2, 3)).ne(0).sum() >= 5  # the cases are not all 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # torchvision's taps, another summation order
    # a contiguous map gives the same (it is copied to channels-last)
    assert torch.equal(roi_align_bags(x.contiguous(), rois, (7, 5), 0.25, sampling_ratio, aligned)[0], values)


def test_pooler_takes_roi_align_bags_on_channels_last_maps_in_eager_inference_only(monkeypatch):
    from densepose_fnl.layers import roi_align as layer
    from densepose_fnl.modeling import poolers

    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(2, 8, 40 // 2**k, 56 // 2**k, generator=g) for k in range(3)]
    rois = _awkward_rois(g)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    pooler = ROIPooler(7, [1 / 4, 1 / 8, 1 / 16], 0, "ROIAlignV2")
    calls = []
    monkeypatch.setattr(poolers, "roi_align_bags", lambda *a: calls.append(a) or layer.roi_align_bags(*a))
    want = pooler(feats, boxes)  # contiguous maps: torchvision's kernel
    assert not calls
    cl = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    with torch.no_grad():
        got = pooler(cl, boxes)
        levels_used = assign_boxes_to_levels(rois[:, 1:], 2, 4).unique()
        assert len(calls) == len(levels_used) >= 2  # one call per level that has RoIs
        assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        empty = pooler(cl, [torch.zeros(0, 4), torch.zeros(0, 4)])
        assert empty.shape == (0, 8, 7, 7)
    calls.clear()
    grad_maps = [f.detach().requires_grad_() for f in cl]
    assert torch.equal(pooler(grad_maps, boxes), want) and not calls  # autograd (training): torchvision's op


def _grouped_boxes(n=600, groups=5, seed=0):
    """Crowded boxes on a quarter-pixel grid (exact in float32 with or without the batched-NMS offsets, so both
    NMS forms see the same IoUs), distinct scores, in `groups` interleaved groups."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 400, (n, 2), generator=g).float() / 4
    wh = torch.randint(8, 160, (n, 2), generator=g).float() / 4
    return torch.cat([xy, xy + wh], 1), torch.randperm(n, generator=g).float() / n, \
        torch.randint(0, groups, (n,), generator=g)


@pytest.mark.parametrize("max_keep", [-1, 37])
def test_nms_per_group_on_threads_equals_the_single_call(monkeypatch, max_keep):
    from densepose_fnl.layers import nms as nms_module

    boxes, scores, groups = _grouped_boxes()
    calls = []
    spy = nms_module._nms_per_group
    monkeypatch.setattr(nms_module, "_nms_per_group", lambda *a: calls.append(a[-1]) or spy(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            want = nms_module.batched_nms(boxes, scores, groups, 0.5, max_keep)  # what training runs: one call
            assert calls == []
            got = nms_module.batched_nms(boxes, scores, groups, 0.5, max_keep, split_groups=True)
    finally:
        torch.set_num_threads(threads)
    assert calls == [2]  # the per-group path ran, on 2 threads
    assert 37 < len(nms_module.batched_nms(boxes, scores, groups, 0.5)) < len(boxes)  # it suppresses; the cap cuts
    assert torch.equal(got, want)


def test_nms_per_group_orders_ties_by_index():
    from densepose_fnl.layers.nms import _nms_per_group

    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 50, 50]])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5])
    # boxes 0 and 2 coincide but lie in different groups: both kept; equal scores go by index
    assert _nms_per_group(boxes, scores, torch.tensor([1, 0, 0, 2]), 0.5, 2).tolist() == [1, 0, 2, 3]
    assert _nms_per_group(boxes, scores, torch.tensor([0, 0, 0, 2]), 0.5, 2).tolist() == [1, 0, 3]
    assert _nms_per_group(boxes[:0], scores[:0], torch.zeros(0, dtype=torch.long), 0.5, 2).numel() == 0


def test_channels_last_inference_feeds_the_network_channels_last_and_changes_only_rounding(model_b):
    image = (torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    seen = []
    hook = model_b.backbone.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    outs = {}
    try:
        for layout in (False, True):
            model_b.channels_last_inference = layout
            with torch.no_grad():
                outs[layout] = model_b([{"image": image}])[0]["instances"]
    finally:
        model_b.channels_last_inference = False
        hook.remove()
    assert seen == [False, True]
    a, b = outs[False], outs[True]
    assert len(a) == len(b) > 0
    torch.testing.assert_close(b.pred_boxes, a.pred_boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(b.scores, a.scores, atol=1e-5, rtol=0)
    for field in ("coarse_segm", "fine_segm", "u", "v"):
        # float rounding of other accumulation orders (measured 1.4e-4 at most, 5e-5 relative)
        torch.testing.assert_close(getattr(b.pred_densepose, field), getattr(a.pred_densepose, field), atol=1e-4,
                                   rtol=1e-4)


def test_channels_last_inference_is_the_mobile_configs_choice():
    assert load_config(str(REPO / "configs/mobile_parsing_rcnn_b_s3x.yaml"), []).TEST.CHANNELS_LAST
    assert not load_config(str(REPO / "configs/densepose_rcnn_R_50_FPN.yaml"), []).TEST.CHANNELS_LAST
    cfg = load_config(str(REPO / "configs/mobile_parsing_rcnn_b.yaml"), ["MODEL.TIMMNETS.PRETRAINED", False])
    assert build_model(cfg).channels_last_inference


def test_rpn_splits_nms_groups_in_inference_only(model_b, monkeypatch):
    from densepose_fnl.modeling.proposal_generator import rpn as rpn_module

    seen = []
    real = rpn_module.batched_nms
    monkeypatch.setattr(rpn_module, "batched_nms", lambda *a, **k: seen.append(k["split_groups"]) or real(*a, **k))
    rpn = model_b.proposal_generator
    image = (torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(5)) * 255)
    with torch.no_grad():
        features = model_b.backbone((image - model_b.pixel_mean) / model_b.pixel_std)
        feats = [features[f] for f in rpn.in_features]
        logits, deltas = rpn.predictions(feats)
        for training in (False, True):
            rpn.train(training)
            try:
                rpn.select_proposals(feats, [t[0] for t in logits], [t[0] for t in deltas], 96, 128)
            finally:
                rpn.train(False)
    assert seen == [True, False]  # training keeps the one NMS call (and so its figures)
