"""The PT2E quantizer (`quantization.pt2e._quantizer`) is built on torchao's public quantizer API only, and
annotates what the int8 exports were made with: the reference XNNPACK quantizer (torchao keeps it, private,
under torchao.testing) with uint8 activations, extended to transposed convs (weights per output channel,
axis 1; QAT: a fake-quantize class that keeps that axis). While torchao still ships the reference, the
prepared graphs (observer placement and sharing, observer classes and their settings) must be identical to
its, on a module with every pattern and on every part of the tiny synthetic model, PTQ and QAT."""
import ast
import copy
import dataclasses
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("torchao")

from densepose_fnl.quantization import pt2e  # noqa: E402
from densepose_fnl.utils.fx_config import backed_size_oblivious  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "synthetic", "mobile_parsing_rcnn_tiny_synthetic.yaml")


def test_quantization_imports_nothing_private_from_torchao():
    path = os.path.join(REPO, "densepose_fnl", "quantization", "pt2e.py")
    bad = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchao"):
            parts = node.module.split(".")
            if "testing" in parts or any(p.startswith("_") for p in parts) or any(
                    a.name.startswith("_") for a in node.names):
                bad.append(f"line {node.lineno}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            bad += [f"line {node.lineno}: import {a.name}" for a in node.names
                    if a.name.startswith("torchao") and any(p.startswith("_") or p == "testing"
                                                             for p in a.name.split("."))]
    assert not bad, bad


class _AllPatterns(nn.Module):
    """Every pattern the quantizer knows, and a few ops it leaves float."""

    def __init__(self):
        super().__init__()
        self.conv_bn_relu = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.conv_bn = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8))  # depthwise
        self.conv_relu = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(inplace=True))
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.deconv_bn_relu = nn.Sequential(nn.ConvTranspose2d(8, 6, 4, 2, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.deconv_relu = nn.Sequential(nn.ConvTranspose2d(6, 6, 4, 2, 1), nn.ReLU())
        self.deconv = nn.ConvTranspose2d(6, 5, 4, 2, 1)
        self.linear_relu = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.linear = nn.Linear(16, 4)

    def forward(self, x):
        a = self.conv_bn_relu(x)
        b = self.conv_bn(a)
        c = F.relu(a + b)  # add + ReLU
        d = self.conv_relu(c) * 0.5 + 1.0  # scalars become constants
        e = self.conv(d)
        f = F.relu(e)  # conv output read twice: no conv + ReLU; the ReLU shares the conv's quantization
        g = F.max_pool2d(f, 2)  # shares too
        s = self.pool(g) * g  # adaptive pool (module form), mul
        up = F.interpolate(s, scale_factor=2.0)  # float
        y = torch.cat([up, e], 1)[:, :8]  # cat: float (see the quantizer's comment)
        z = self.deconv(self.deconv_relu(self.deconv_bn_relu(y)))
        v = self.linear(self.linear_relu(torch.flatten(self.pool(g), 1)))
        return z, v


def _capture(module: nn.Module, args, train: bool) -> torch.fx.GraphModule:
    module.train(train)
    with backed_size_oblivious():
        gm = torch.export.export(module, args, strict=False).module()
    pt2e.fold_frozen_batchnorm(gm)
    pt2e.unshare_parameters(gm)
    return gm


def _prepare(gm, quantizer, is_qat):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (prepare_qat_pt2e if is_qat else prepare_pt2e)(copy.deepcopy(gm), quantizer)


def _observers(gm):
    """{name: (class, dtype, range, qscheme, axis, eps, inner observer class, its axis)} of the prepared graph."""
    out = {}
    for name, m in gm.named_modules():
        if not name.startswith("activation_post_process"):
            continue
        inner = getattr(m, "activation_post_process", None)
        eps = getattr(m, "eps", None)
        qrange = (getattr(m, "quant_min", None), getattr(m, "quant_max", None))
        if str(getattr(m, "qscheme", None)) == "torch.per_channel_symmetric":
            qrange = "weight"  # ours differ by design (7-bit GEMM weights): test_what_is_quantized_and_how
        out[name] = (type(m).__name__, str(getattr(m, "dtype", None)), qrange,
                     str(getattr(m, "qscheme", None)), getattr(m, "ch_axis", None),
                     float(eps) if eps is not None else None, type(inner).__name__ if inner is not None else None,
                     getattr(inner, "ch_axis", None))
    return out


def _annotations(gm):
    out = {}
    for n in gm.graph.nodes:
        a = n.meta.get("quantization_annotation")
        if a is not None and (a.input_qspec_map or a.output_qspec is not None):
            out[n.name] = ({k.name: repr(v) if v is None else type(v).__name__ for k, v in a.input_qspec_map.items()},
                           type(a.output_qspec).__name__ if a.output_qspec is not None else None)
    return out


def _reference_quantizer(is_qat: bool):
    """The quantizer the int8 exports were made with before this one (densepose_fnl's `_quantizer` until
    then, verbatim): torchao's reference XNNPACK quantizer, uint8 activations, transposed convs added."""
    ref = pytest.importorskip("torchao.testing.pt2e._xnnpack_quantizer")
    U = pytest.importorskip("torchao.testing.pt2e._xnnpack_quantizer_utils")
    from torchao.quantization.pt2e import FakeQuantize
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    config = ref.get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    u8 = dict(dtype=torch.uint8, quant_min=0, quant_max=255)
    config = dataclasses.replace(config, input_activation=dataclasses.replace(config.input_activation, **u8),
                                 output_activation=dataclasses.replace(config.output_activation, **u8))
    weight_spec = U.get_weight_qspec(config)
    ctr = weight_spec.observer_or_fake_quant_ctr.p
    cls = FakeQuantize if is_qat else ctr.func
    transposed_weight_spec = dataclasses.replace(
        weight_spec, ch_axis=1, observer_or_fake_quant_ctr=cls.with_args(**{**ctr.keywords, "ch_axis": 1}))

    class Reference(ref.XNNPACKQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target is not torch.ops.aten.conv_transpose2d.input:
                    continue
                partition = [n, n.args[1]] + ([n.args[2]] if len(n.args) > 2 and n.args[2] is not None else [])
                if U._is_annotated(partition):
                    ann = n.meta.get("quantization_annotation")
                    if ann is not None and n.args[1] in ann.input_qspec_map:
                        ann.input_qspec_map[n.args[1]] = transposed_weight_spec
                    continue
                qmap = {n.args[0]: U.get_input_act_qspec(config), n.args[1]: transposed_weight_spec}
                if len(partition) > 2:
                    qmap[n.args[2]] = U.get_bias_qspec(config)
                n.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=qmap, output_qspec=U.get_output_act_qspec(config), _annotated=True)
                U._mark_nodes_as_annotated(partition)
            return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Reference().set_global(config)


def _assert_same_as_reference(gm, is_qat, what):
    ours, ref = _prepare(gm, pt2e._quantizer(is_qat), is_qat), _prepare(gm, _reference_quantizer(is_qat), is_qat)
    assert _observers(ours) == _observers(ref), what
    assert ours.code == ref.code, what


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_every_pattern_is_annotated_like_the_reference(is_qat):
    torch.manual_seed(0)
    gm = _capture(_AllPatterns(), (torch.randn(2, 3, 16, 16),), train=is_qat)
    _assert_same_as_reference(gm, is_qat, "all-patterns module")


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_what_is_quantized_and_how(is_qat):
    torch.manual_seed(0)
    gm = _capture(_AllPatterns(), (torch.randn(2, 3, 16, 16),), train=is_qat)
    q = pt2e._quantizer(is_qat)
    gm = q.transform_for_annotation(gm)
    q.annotate(gm)
    ann = {n.name: n.meta.get("quantization_annotation") for n in gm.graph.nodes}
    op = {n.name: n for n in gm.graph.nodes}

    def weight_spec(conv_name):
        return ann[conv_name].input_qspec_map[op[conv_name].args[1]]

    convs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    deconvs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv_transpose2d.input]
    assert len(convs) == 4 and len(deconvs) == 3
    for n in convs + deconvs + [n for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default]:
        a = ann[n.name]
        x_spec, w_spec = a.input_qspec_map[n.args[0]], weight_spec(n.name)
        assert (x_spec.dtype, x_spec.quant_min, x_spec.quant_max, x_spec.qscheme) == (
            torch.uint8, 0, 255, torch.per_tensor_affine)
        axis = 1 if n in deconvs else 0
        # 7-bit weights for what ONNX Runtime computes as a GEMM (exact on x86 without VNNI), 8-bit depthwise
        qmax = 127 if n in convs and n.args[6:7] == (8,) else 63
        assert (w_spec.dtype, w_spec.quant_min, w_spec.quant_max, w_spec.qscheme, w_spec.ch_axis) == (
            torch.int8, -qmax, qmax, torch.per_channel_symmetric, axis)
        if is_qat and axis == 1:  # the axis is bound in the fake-quantize constructor (prepare drops ch_axis)
            ctr = w_spec.observer_or_fake_quant_ctr
            fq = ctr()
            assert fq.ch_axis == 1 and fq.activation_post_process.ch_axis == 1
    assert sorted(weight_spec(n.name).quant_max for n in convs) == [63, 63, 63, 127]
    # cat and upsampling are left float; the ReLU after the twice-read conv shares the conv's quantization
    for n in gm.graph.nodes:
        if n.target in (torch.ops.aten.cat.default, torch.ops.aten.upsample_nearest2d.vec):
            assert ann[n.name] is None, n.name
    relu_after_conv = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.relu.default
                           and n.args[0].target == torch.ops.aten.conv2d.default and len(n.args[0].users) > 1)
    assert type(ann[relu_after_conv.name].output_qspec).__name__ == "SharedQuantizationSpec"
    assert ann[relu_after_conv.name].output_qspec.edge_or_node is relu_after_conv.args[0]
    # python scalars of add / mul became quantizable constants
    for n in gm.graph.nodes:
        if n.target in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            assert all(isinstance(a, torch.fx.Node) for a in n.args[:2])


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_model_parts_are_prepared_like_the_reference(is_qat):
    from densepose_fnl.config import load_config
    from densepose_fnl.modeling import build_model

    cfg = load_config(TINY, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    for _, _, module, kind in pt2e._parts(model):
        gm = pt2e._capture(model, kind, module, train=is_qat)
        _assert_same_as_reference(gm, is_qat, kind)
