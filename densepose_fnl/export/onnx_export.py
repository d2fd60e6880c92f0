"""Export a (float or int8) GeneralizedRCNN to one self-contained ONNX file with dynamic H / W.

Path: `DensePoseTensorModel` -> `torch.export` (non-strict, H and W symbolic, >= 65 px so no pyramid
level is specialised to size 1) -> `torch.onnx.export(dynamo=True)` at opset 18 (>= 16 is needed for
RoiAlign's half-pixel mode; opset 11 silently exports the non-aligned op; capped NMS translated to
NonMaxSuppression with max_output_boxes_per_class) -> clean-up (drop per-node stack-trace metadata,
deduplicate identical initializers, e.g. the int8 copies of the RPN conv shared by
all levels) -> rewrites for ONNX Runtime's layouts and int8 kernels, each with the same outputs
(`channels_last_flatten`; int8 graphs: `int8_channel_padding`, `int8_deconv_lowering`,
`int8_early_quantize`) -> `onnx.checker` ->
single file (no external data).
"""
import hashlib
import logging
import os
from typing import Optional

import numpy as np
import torch
from torch import nn

from .channels_last_flatten import flatten_channels_last
from .int8_channel_padding import pad_int8_conv_channels
from .int8_deconv_lowering import lower_int8_conv_transpose
from .int8_early_quantize import quantize_before_data_movement
from .tensor_model import DensePoseTensorModel, is_cse_model

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MIN_SIDE = 65  # P5 / P6 >= 2 cells (the RPN specialises 1-cell levels); OrtPredictor zero-pads smaller images
MAX_SIDE = 4096  # the int8 backbone graph is captured for sides up to 4096


def _dedupe_initializers(model) -> int:
    """Make identical initializers (same dtype, shape, bytes) one tensor; returns how many were dropped."""
    from onnx import numpy_helper

    seen, rename = {}, {}
    keep = []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        key = (init.data_type, tuple(init.dims), hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest())
        if key in seen:
            rename[init.name] = seen[key]
        else:
            seen[key] = init.name
            keep.append(init)
    if not rename:
        return 0
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)

    def fix(graph):
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    fix(attr.g)
                for g in attr.graphs:
                    fix(g)
    fix(model.graph)
    return len(rename)


def _strip_metadata(model) -> None:
    def strip(graph):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    strip(attr.g)
        for vi in list(graph.value_info):
            del vi.metadata_props[:]
    strip(model.graph)
    del model.graph.value_info[:]  # shape annotations only; ORT re-infers them


def _nms_top_k_onnx(boxes, scores, iou_threshold: float, max_keep: int):
    """ONNX translation of `layers.nms.nms_top_k`: NonMaxSuppression with max_output_boxes_per_class =
    max_keep (one batch, one class), so ONNX Runtime stops after max_keep selections."""
    from onnxscript import opset18 as op

    selected = op.NonMaxSuppression(op.Unsqueeze(boxes, [0]), op.Unsqueeze(scores, [0, 1]), max_keep, iou_threshold)
    # (M, 3) rows of (batch, class, box index) -> (M,) box indices, in selection (= score) order
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])


def custom_translations() -> dict:
    import densepose_fnl.layers.nms  # noqa: F401 - registers the custom op

    return {torch.ops.densepose_fnl.nms_top_k.default: _nms_top_k_onnx}


def export_onnx(model: nn.Module, output_path: str, sample_image: Optional[torch.Tensor] = None,
                opset: int = DEFAULT_OPSET, metadata: Optional[dict] = None, ort_rewrites: bool = True,
                class_to_mesh_name: Optional[dict] = None) -> str:
    """Write `model` (eval GeneralizedRCNN, float or with `quantization` sub-modules) to `output_path`.

    The graph: input `image` (1, 3, H, W) uint8 (float works too, same values) in INPUT.FORMAT, H, W >= 65;
    outputs `tensor_model.output_names(model)` (OUTPUT_NAMES, then any chart confidences). `sample_image`
    (1, 3, H, W) only drives tracing.
    `ort_rewrites`: flatten the box head's output channels-last (one layout transpose fewer); in an int8
    graph also pad conv channels for ONNX Runtime's fast int8 kernels, quantize pooled RoI features before
    they are concatenated / re-ordered, and turn the QDQ transposed convs into int8 convs + DepthToSpace (ORT
    has no integer ConvTranspose). Same outputs (the last: same int8 sums).
    A CSE model outputs embedding, coarse_segm instead of the chart maps, and its vertex embeddings are written
    beside the graph (`vertex_embeddings.write_vertex_embeddings`: `<model>.vertex_embeddings.npz`, named in the
    metadata with `class_to_mesh_name`, DATASETS.CLASS_TO_MESH_NAME_MAPPING; default {0: the only mesh})."""
    import onnx

    model = model.eval()
    wrapper = DensePoseTensorModel(model).eval()
    if sample_image is None:
        g = torch.Generator().manual_seed(0)
        sample_image = torch.randint(0, 256, (1, 3, 256, 320), dtype=torch.uint8, generator=g)
    if sample_image.dim() == 3:
        sample_image = sample_image[None]
    h = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    w = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    from ..utils.fx_config import backed_size_oblivious

    # size-oblivious tracing: no specialisation of sizes 0 / 1 (single RoI, 1-cell pyramid levels)
    with torch.no_grad(), backed_size_oblivious():
        ep = torch.export.export(wrapper, (sample_image,), dynamic_shapes={"image": {2: h, 3: w}}, strict=False)
        onnx_program = torch.onnx.export(ep, (sample_image,), dynamo=True, opset_version=opset,
                                         input_names=["image"], output_names=list(wrapper.output_names),
                                         optimize=True, verbose=False,
                                         custom_translation_table=custom_translations())
    proto = onnx_program.model_proto
    _strip_metadata(proto)
    dropped = _dedupe_initializers(proto)
    if dropped:
        logger.info("export: %d duplicate initializers removed", dropped)
    if ort_rewrites:
        flattened = flatten_channels_last(proto)
        report = pad_int8_conv_channels(proto)
        hoisted = quantize_before_data_movement(proto)
        lowered = lower_int8_conv_transpose(proto)
        logger.info("export: ONNX Runtime rewrites: %d channels-last flattens; int8: %s, %d quantizations moved "
                    "before data movement, %d transposed convs as convs", flattened, report, hoisted, lowered)
    metadata = dict(metadata or {})
    if is_cse_model(model):
        from .vertex_embeddings import write_vertex_embeddings

        npz, entry = write_vertex_embeddings(model, output_path, class_to_mesh_name)
        metadata.update(entry)
        logger.info("export: CSE vertex embeddings written to %s", npz)
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(k), str(v)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    onnx.save_model(proto, output_path, save_as_external_data=False)
    onnx.checker.check_model(output_path, full_check=True)
    return output_path
