"""Inference semantics the authors' weights depend on, pinned against hand-computed detectron2 /
DensePoseFnL behaviour (see docs/MODEL_ZOO.md). Reference facts: detectron2 @bb96d0b (the commit
DensePoseFnL's README pins) with projects/DensePose, DensePoseFnL fpn.py / backbone.py / roi_heads.py,
timm 0.4.12."""
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from densepose_fnl.checkpoint import authors_b_config
from densepose_fnl.modeling import build_model
from densepose_fnl.modeling.box_regression import Box2BoxTransform
from densepose_fnl.modeling.poolers import ROIPooler
from densepose_fnl.modeling.proposal_generator import DefaultAnchorGenerator


@pytest.fixture(scope="module")
def cfg():
    return authors_b_config()


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    # non-trivial values everywhere (fusion weights, BN statistics), as trained weights would be
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")) or ".fuse_" in name and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) - 0.3)
    return m


# ---------------------------------------------------------------- config values (detectron2 defaults + their YAML)
def test_inference_settings_of_the_authors_config(cfg):
    m = cfg.MODEL
    assert (m.ROI_HEADS.SCORE_THRESH_TEST, m.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE) == (0.05, 0.5, 100)
    assert (m.RPN.NMS_THRESH, m.RPN.PRE_NMS_TOPK_TEST, m.RPN.POST_NMS_TOPK_TEST) == (0.7, 1000, 1000)
    assert m.PROPOSAL_GENERATOR.MIN_SIZE == 0
    assert tuple(m.RPN.BBOX_REG_WEIGHTS) == (1.0, 1.0, 1.0, 1.0)
    assert tuple(m.ROI_BOX_HEAD.BBOX_REG_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)
    assert m.ANCHOR_GENERATOR.OFFSET == 0.0
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT) == (800, 1333, "RGB")
    assert list(m.PIXEL_MEAN) == [123.675, 116.280, 103.530] and list(m.PIXEL_STD) == [58.395, 57.120, 57.375]
    assert m.ROI_DENSEPOSE_HEAD.DECONV_KERNEL == 4 and m.ROI_DENSEPOSE_HEAD.NUM_PATCHES == 24
    assert not m.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG


def test_built_model_uses_those_settings(model):
    rpn, roi = model.proposal_generator, model.roi_heads
    assert (rpn.nms_thresh, rpn.pre_nms_topk[False], rpn.post_nms_topk[False]) == (0.7, 1000, 1000)
    assert rpn.box2box_transform.weights == (1.0, 1.0, 1.0, 1.0)
    p = roi.box_predictor
    assert (p.test_score_thresh, p.test_nms_thresh, p.test_topk_per_image) == (0.05, 0.5, 100)
    assert p.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0)
    assert math.isclose(p.box2box_transform.scale_clamp, math.log(1000.0 / 16))
    bp, dp = roi.box_pooler, roi.densepose_pooler
    assert (bp.output_size, bp.sampling_ratio, bp.aligned, bp.scales) == ((7, 7), 0, True, [1 / 4, 1 / 8, 1 / 16, 1 / 32])
    # Parsing R-CNN "simple decoder": the DensePose branch pools P2 only (DensePoseFnL SimpleDecoder)
    assert (dp.output_size, dp.sampling_ratio, dp.aligned, dp.scales) == ((32, 32), 0, True, [1 / 4])
    assert model.input_format == "RGB"
    assert model.backbone.size_divisibility == 32


# ---------------------------------------------------------------- anchors
def _d2_cell_anchors(size, ratios):
    out = []
    for r in ratios:
        w = math.sqrt(size * size / r)
        h = r * w
        out.append([-w / 2, -h / 2, w / 2, h / 2])
    return out


def test_anchors_equal_hand_computed_detectron2_anchors(model):
    gen = model.proposal_generator.anchor_generator
    assert gen.strides == [4, 8, 16, 32, 64]
    feats = [torch.zeros(1, 1, 2, 3)] * 5
    for level, anchors in enumerate(gen(feats)):
        stride, size = 4 * 2**level, 32 * 2**level
        cell = _d2_cell_anchors(size, [0.5, 1.0, 2.0])
        # order: row-major over locations (y outer, x inner), then the 3 cell anchors
        expected = [[c[0] + x * stride, c[1] + y * stride, c[2] + x * stride, c[3] + y * stride]
                    for y in range(2) for x in range(3) for c in cell]
        torch.testing.assert_close(anchors, torch.tensor(expected), rtol=0, atol=1e-4)
    # level p2, location (0, 0), ratio 0.5: w = sqrt(32^2 / 0.5) = 45.2548, h = 22.6274
    torch.testing.assert_close(gen(feats)[0][0], torch.tensor([-22.6274, -11.3137, 22.6274, 11.3137]), atol=1e-4, rtol=0)


def test_rpn_predictions_are_flattened_in_anchor_order(model):
    rpn = model.proposal_generator
    n, a, h, w = 1, 3, 2, 3
    logits = torch.arange(n * a * h * w, dtype=torch.float32).view(n, a, h, w)
    deltas = torch.arange(n * a * 4 * h * w, dtype=torch.float32).view(n, a * 4, h, w)
    flat_logits, flat_deltas = rpn.flatten_predictions([logits], [deltas])
    for y in range(h):
        for x in range(w):
            for k in range(a):
                i = (y * w + x) * a + k  # anchor index of (y, x, k)
                assert flat_logits[0][0, i] == logits[0, k, y, x]
                assert torch.equal(flat_deltas[0][0, i], deltas[0, k * 4:(k + 1) * 4, y, x])


# ---------------------------------------------------------------- box decoding
def test_apply_deltas_weights_and_clamp():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    roi = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    out = roi.apply_deltas(torch.tensor([[10.0, -10.0, 5.0 * math.log(2), 0.0]]), box)
    # dx = 1 -> centre x + 20; dy = -1 -> centre y - 40; w doubles
    torch.testing.assert_close(out, torch.tensor([[20.0, -20.0, 60.0, 20.0]]))
    rpn = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    out = rpn.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, -100.0]]), box)
    w = 20 * 1000.0 / 16  # exp(min(100, log(1000/16))) * 20
    h = 40 * math.exp(-100.0)  # no lower clamp
    torch.testing.assert_close(out, torch.tensor([[20 - w / 2, 40 - h / 2, 20 + w / 2, 40 + h / 2]]))
    # several classes per row: deltas (R, K*4) decode each group against the same box
    two = rpn.apply_deltas(torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]), box)
    torch.testing.assert_close(two, torch.tensor([[10.0, 20.0, 30.0, 60.0, 30.0, 20.0, 50.0, 60.0]]))


# ---------------------------------------------------------------- RoI pooling
def test_roialignv2_is_torchvision_aligned_sampling_ratio_0_on_the_detectron2_level():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 4, 64 // 2**i, 64 // 2**i, generator=g) for i in range(4)]
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.5, 3.25, 200.0, 150.0]]),
             torch.tensor([[5.0, 5.0, 117.0, 117.0], [0.0, 0.0, 255.0, 255.0], [1.0, 2.0, 3.0, 4.0]])]
    pooler = ROIPooler(7, scales, 0, "ROIAlignV2")
    out = pooler(feats, boxes)
    k = 0
    for img, bs in enumerate(boxes):
        for b in bs:
            size = math.sqrt(float((b[2] - b[0]) * (b[3] - b[1])))
            level = int(min(max(math.floor(4 + math.log2(size / 224 + 1e-8)), 2), 5)) - 2
            rois = torch.cat([torch.tensor([float(img)]), b])[None]
            ref = roi_align(feats[level], rois, (7, 7), scales[level], sampling_ratio=0, aligned=True)
            torch.testing.assert_close(out[k:k + 1], ref)
            k += 1
    v1 = ROIPooler(7, scales, 2, "ROIAlign")(feats, boxes)
    rois = torch.cat([torch.tensor([[0.0]]), boxes[0][:1]], dim=1)
    torch.testing.assert_close(v1[:1], roi_align(feats[0], rois, (7, 7), 1 / 4, sampling_ratio=2, aligned=False))


# ---------------------------------------------------------------- backbone
def test_backbone_norms_are_frozen_bn_with_timm_eps(model):
    from densepose_fnl.layers import FrozenBatchNorm2d

    norms = [m for m in model.backbone.bottom_up.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
             or isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 63 and all(type(m) is FrozenBatchNorm2d or isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert {m.eps for m in norms} == {1e-5}  # spnasnet_100 is not a tf_ model: torch BN eps kept
    bn = norms[0]
    x = torch.randn(2, bn.num_features, 3, 3)
    expected = ((x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5)
                * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(FrozenBatchNorm2d.forward(bn, x), expected)  # the BN part (an act may follow)


def test_backbone_features_equal_timm_with_the_same_weights(model):
    import timm

    ref = timm.create_model("spnasnet_100", features_only=True, out_indices=(1, 2, 3, 4),
                            feature_location="expansion").eval()
    prefix = "backbone.bottom_up."
    ref.load_state_dict({k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)})
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = list(model.backbone.bottom_up(x).values()), ref(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bifpn_wiring_and_fast_normalized_fusion(model):
    bifpn = model.backbone
    g = torch.Generator().manual_seed(2)
    c2, c3, c4, c5 = (torch.randn(1, c, 32 // 2**i, 48 // 2**i, generator=g) for i, c in enumerate((72, 120, 288, 1152)))

    def fuse(module, xs):  # EfficientDet fast normalized fusion, eps 1e-4 (DensePoseFnL fpn.py)
        w = F.relu(module.weight)
        return sum(wi * xi for wi, xi in zip(w, xs)) / (w.sum() + 1e-4)

    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    with torch.no_grad():
        p5, p4, p3, p2 = bifpn.l5(c5), bifpn.l4(c4), bifpn.l3(c3), bifpn.l2(c2)
        p4_tr = bifpn.p4_tr(fuse(bifpn.fuse_p4_tr, [p4, up(p5)]))
        p3_tr = bifpn.p3_tr(fuse(bifpn.fuse_p3_tr, [p3, up(p4_tr)]))
        p2_out = bifpn.p2_out(fuse(bifpn.fuse_p2_out, [p2, up(p3_tr)]))
        p3_out = bifpn.p3_out(fuse(bifpn.fuse_p3_out, [p3, p3_tr, bifpn.down_p2(p2_out)]))
        p4_out = bifpn.p4_out(fuse(bifpn.fuse_p4_out, [p4, p4_tr, bifpn.down_p3(p3_out)]))
        p5_out = bifpn.p5_out(fuse(bifpn.fuse_p5_out, [p5, bifpn.down_p4(p4_out)]))
        expected = [p2_out, p3_out, p4_out, p5_out, p5_out[:, :, ::2, ::2]]
        original = bifpn.bottom_up.forward
        bifpn.bottom_up.forward = lambda x: {"s1": c2, "s2": c3, "s3": c4, "s5": c5}
        try:
            out = bifpn(torch.zeros(1, 3, 128, 192))
        finally:
            bifpn.bottom_up.forward = original
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for a, b in zip(out.values(), expected):
        torch.testing.assert_close(a, b)
    assert bifpn.fuse_p3_out.eps.item() == pytest.approx(1e-4)
    node = bifpn.p3_out  # depthwise 3x3 (no bias) -> pointwise 1x1 (no bias) -> BN(eps 1e-5) -> ReLU
    assert node[0][0].groups == 64 and node[0][0].bias is None and node[0][1].bias is None
    assert isinstance(node[1], torch.nn.BatchNorm2d) and node[1].eps == 1e-5 and isinstance(node[2], torch.nn.ReLU)
    assert bifpn.down_p2[0][0].stride == (2, 2)


# ---------------------------------------------------------------- DensePose head and predictor
def test_aspp_branch_order_rates_and_head(model):
    head = model.roi_heads.densepose_head
    aspp = head.ASPP
    dil = [aspp.convs[i][0].dilation for i in range(4)]
    assert dil == [(1, 1), (6, 6), (12, 12), (18, 18)]  # DensePoseFnL replaces DensePose's 6/12/56
    assert aspp.convs[0][0].kernel_size == (1, 1) and all(aspp.convs[i][0].padding == (r, r)
                                                          for i, r in zip((1, 2, 3), (6, 12, 18)))
    assert not hasattr(head, "NLBlock") or not head.use_nonlocal
    x = torch.randn(3, 64, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        branches = [F.relu(aspp.convs[i][0](x)) for i in range(4)]
        pooled = F.relu(aspp.convs[4][1](x.mean(dim=(2, 3), keepdim=True)))
        branches.append(F.interpolate(pooled, size=(32, 32), mode="bilinear", align_corners=False))
        y = F.relu(aspp.project[0](torch.cat(branches, dim=1)))
        for i in range(1, 5):
            y = F.relu(getattr(head, f"body_conv_fcn{i}")(y))
        torch.testing.assert_close(head(x), y)


def test_predictor_upsampling_and_output_order(model):
    pred = model.roi_heads.densepose_predictor
    for m in (pred.ann_index_lowres, pred.index_uv_lowres, pred.u_lowres, pred.v_lowres):
        assert (m.kernel_size, m.stride, m.padding) == ((4, 4), (2, 2), (1, 1))
    x = torch.randn(2, 64, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = pred(x)
        # detectron2 interpolates by UP_SCALE (1 here) bilinearly: identical to not interpolating
        ref = [F.interpolate(m(x), scale_factor=1, mode="bilinear", align_corners=False)
               for m in (pred.ann_index_lowres, pred.index_uv_lowres, pred.u_lowres, pred.v_lowres)]
    for got, exp in zip((out.coarse_segm, out.fine_segm, out.u, out.v), ref):
        assert got.shape[-2:] == (64, 64)
        torch.testing.assert_close(got, exp, rtol=0, atol=0)
    assert out.coarse_segm.shape[1] == 15 and out.fine_segm.shape[1] == 25


def test_chart_labels_combine_coarse_and_fine_as_detectron2():
    from densepose_fnl.postprocess.charts import chart_labels_and_uv

    s = 4
    coarse = torch.zeros(15, s, s)
    coarse[0, :, :2] = 5.0  # left half background
    coarse[7, :, 2:] = 5.0  # right half: any non-zero coarse class is foreground
    fine = torch.zeros(25, s, s)
    fine[3] = 1.0
    fine[11, 0, :] = 2.0  # top row: part 11 wins
    u = torch.arange(25, dtype=torch.float32).view(25, 1, 1).expand(25, s, s) / 100
    v = 1 - u
    labels, uv = chart_labels_and_uv(coarse, fine, u, v, s, s)
    expected = torch.tensor([[0, 0, 11, 11], [0, 0, 3, 3], [0, 0, 3, 3], [0, 0, 3, 3]])
    assert torch.equal(labels, expected)
    torch.testing.assert_close(uv[0], expected.float() / 100 * (expected > 0))
    torch.testing.assert_close(uv[1], (1 - expected.float() / 100) * (expected > 0))


def test_chart_box_size_truncation_in_float32():
    from densepose_fnl.postprocess.charts import int_box_xywh

    box = torch.tensor([13.51405143737793, 1.0, 63.5140495300293, 20.0], dtype=torch.float32)
    xywh = box.clone()
    xywh[2:] -= xywh[:2]  # detectron2 BoxMode.convert on the float32 tensor, then make_int_box: .long()
    assert int_box_xywh(box) == tuple(xywh.long().tolist()) == (13, 1, 50, 19)


# ---------------------------------------------------------------- post-processing of boxes
def test_box_inference_background_last_threshold_clip_then_nms():
    from densepose_fnl.modeling.roi_heads import fast_rcnn_inference_single_image

    boxes = torch.tensor([[-5.0, 0.0, 50.0, 50.0], [0.0, 0.0, 50.0, 51.0], [60.0, 60.0, 90.0, 90.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.7, 0.3]])  # column 1 = background
    pred_boxes, pred_scores, classes = fast_rcnn_inference_single_image(boxes, scores, 40, 80, 0.05, 0.5, 100)
    # 0.05 is not > 0.05: dropped; box 1 overlaps box 0 after clipping to 40 rows -> suppressed
    torch.testing.assert_close(pred_scores, torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(pred_boxes, torch.tensor([[0.0, 0.0, 50.0, 40.0], [0.0, 0.0, 10.0, 10.0]]))
    assert classes.tolist() == [0, 0]


def test_rpn_nms_is_per_level_and_topk_per_level():
    from densepose_fnl.modeling.matcher import Matcher
    from densepose_fnl.modeling.proposal_generator import RPN

    class SameBoxAnchors:  # every anchor of every level is the same box
        def anchors_at(self, level, feature, idx):
            return torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(len(idx), 4)

    rpn = RPN(["p2", "p3"], torch.nn.Identity(), SameBoxAnchors(), Matcher([0.3, 0.7], [0, -1, 1]),
              Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), 256, 0.5, pre_nms_topk=(2, 2), post_nms_topk=(1000, 1000)).eval()
    logits = [torch.tensor([3.0, 2.0, 1.0]), torch.tensor([5.0, 4.0])]
    deltas = [torch.zeros(3, 4), torch.zeros(2, 4)]
    boxes, scores = rpn.select_proposals([torch.zeros(1, 1, 1, 3), torch.zeros(1, 1, 1, 2)], logits, deltas, 20, 20)
    # identical boxes: one survivor per level, levels never suppress each other, best score first
    torch.testing.assert_close(scores, torch.tensor([5.0, 3.0]))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2))


# ---------------------------------------------------------------- input
def test_input_rgb_resize_and_normalization(cfg, model):
    from densepose_fnl.data.transforms import resize_output_shape as shortest_edge_size
    from densepose_fnl.data.preprocess import preprocess_bgr_image

    # ResizeShortestEdge(800, 1333): scale = 800 / short side, capped by 1333 / long side, int(x + 0.5)
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(300, 1000, 800, 1333) == (400, 1333)
    assert shortest_edge_size(801, 600, 800, 1333) == (1068, 800)
    bgr = np.zeros((30, 40, 3), np.uint8)
    bgr[..., 0], bgr[..., 2] = 10, 200  # blue 10, red 200
    inp = preprocess_bgr_image(bgr, "RGB", 800, 1333)
    assert inp["image"].shape == (3, 800, 1067) and (inp["height"], inp["width"]) == (30, 40)
    assert inp["image"][0].float().mean() == 200 and inp["image"][2].float().mean() == 10  # RGB
    from PIL import Image

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    got = preprocess_bgr_image(noisy, "RGB", 800, 1333)["image"].permute(1, 2, 0).numpy()
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(noisy[:, :, ::-1])).resize((1067, 800), Image.BILINEAR))
    assert np.array_equal(got, expected)  # PIL bilinear on uint8, as detectron2's ResizeTransform
    image = torch.full((3, 50, 70), 100.0)
    batch, sizes = model.preprocess_image([{"image": image}])
    assert batch.shape == (1, 3, 64, 96) and sizes == [(50, 70)]
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN), torch.tensor(cfg.MODEL.PIXEL_STD)
    torch.testing.assert_close(batch[0, :, 0, 0], (100 - mean) / std)
    assert torch.all(batch[0, :, 50:, :] == 0) and torch.all(batch[0, :, :, 70:] == 0)  # pad after normalizing
