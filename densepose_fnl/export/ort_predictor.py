"""OrtPredictor: DefaultPredictor's interface on an exported ONNX model run by ONNX Runtime.

`OrtPredictor(onnx_path, cfg)(image_bgr HxWx3 uint8) -> {"instances": Instances}` with the same fields
as the PyTorch predictor (pred_boxes, scores, pred_classes, pred_densepose = DensePoseChartPredictorOutput,
with confidences for a WC1 / WC2 / WC1M / WC2M export) in the original image's pixels. Outside the graph,
as in DefaultPredictor: BGR -> INPUT.FORMAT, resize to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (PIL bilinear) and, after the graph, `detector_postprocess`
(boxes scaled back to the original size). In the graph: normalisation, padding to 32, the whole model.
The file may be the .onnx export or its ORT format twin (.ort, `export.ort_mobile`); `provider` picks the
ONNX Runtime execution provider (`make_session`).

A CSE export (outputs boxes, scores, classes, embedding, coarse_segm: `tensor_model.EMBEDDING_OUTPUT_NAMES`)
gives pred_densepose = DensePoseEmbeddingPredictorOutput, as the PyTorch CSE model. Its vertex embeddings are
read from the `.vertex_embeddings.npz` beside the graph (`export.vertex_embeddings`; missing / mismatched:
a one-line VertexEmbeddingsError) and offered as `vertex_embeddings(mesh_name)` (what
`postprocess.predictor_vertex_embeddings` picks up, so apply_net / the dump path treat it as the PyTorch
model). The pixel -> vertex matching is the post-processing step `cse_results(instances)`: the very
`CseResultsConverter` (-> `closest_vertices`, in chunks of pixels) eager results go through.
"""
import os
from typing import Dict, Optional

import numpy as np
import torch

from ..data.preprocess import preprocess_bgr_image
from ..postprocess import detector_postprocess
from ..structures import CONFIDENCE_NAMES, DensePoseChartPredictorOutput, DensePoseEmbeddingPredictorOutput, Instances
from ..structures.boxes import clip_boxes
from ..structures.densepose_outputs import EMBEDDING_NAMES
from .onnx_export import MIN_SIDE
from .tensor_model import EMBEDDING_OUTPUT_NAMES, OUTPUT_NAMES


CPU_PROVIDER = "CPUExecutionProvider"


class OrtProviderError(ValueError):
    """The execution provider asked for is not in the installed ONNX Runtime; the message is one line naming
    it and the available ones."""


def resolve_provider(name: Optional[str] = None) -> str:
    """ONNX Runtime's name of execution provider `name` ("XNNPACK", "xnnpack", "XnnpackExecutionProvider";
    None / "" = the CPU one) if the installed onnxruntime has it, else an OrtProviderError."""
    import onnxruntime as ort

    if not name:
        return CPU_PROVIDER
    available = ort.get_available_providers()
    wanted = name.lower()
    wanted = wanted if wanted.endswith("executionprovider") else wanted + "executionprovider"
    for p in available:
        if p.lower() == wanted:
            return p
    raise OrtProviderError(f"ONNX Runtime execution provider {name!r} is not available in this onnxruntime "
                           f"{ort.__version__} (available: {', '.join(available)})")


def make_session(onnx_path: str, num_threads: Optional[int] = None, profile: bool = False,
                 provider: Optional[str] = None, stop_spinning: bool = False):
    """The one ONNX Runtime session factory (OrtPredictor, benchmarks). `provider` (`resolve_provider`) comes
    first, with the CPU provider after it for the nodes it does not take; its options are ONNX Runtime's
    defaults, except `stop_spinning=True`: its worker threads spin during a run but stop as soon as it
    returns (``session.force_spinning_stop``), for sessions whose outputs go on to heavy work on the same
    cores (CSE matching: 2x slower beside spinning threads; no spinning at all would cost the graph ~3 ms,
    measured)."""
    import onnxruntime as ort

    chosen = resolve_provider(provider)
    providers = [chosen] + ([CPU_PROVIDER] if chosen != CPU_PROVIDER else [])

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        so.intra_op_num_threads = int(num_threads)
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if stop_spinning:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    if profile:
        so.enable_profiling = True
    return ort.InferenceSession(onnx_path, sess_options=so, providers=providers)


class OrtPredictor:
    def __init__(self, onnx_path: str, cfg, num_threads: Optional[int] = None, provider: Optional[str] = None):
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
        self.cfg = cfg.clone()
        self.input_format = cfg.INPUT.FORMAT
        self.min_size, self.max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
        # its outputs go on to post-processing on the same cores (CSE: the vertex matching): threads stop spinning
        self.session = make_session(onnx_path, num_threads, provider=provider, stop_spinning=True)
        names = tuple(o.name for o in self.session.get_outputs())
        extra = names[len(OUTPUT_NAMES):]
        self.is_cse = names == EMBEDDING_OUTPUT_NAMES
        if not self.is_cse and (names[:len(OUTPUT_NAMES)] != OUTPUT_NAMES or len(set(extra)) != len(extra)
                                or list(extra) != [n for n in CONFIDENCE_NAMES if n in extra]):
            raise ValueError(f"{onnx_path} is not a densepose_fnl export: outputs {list(names)}, expected "
                             f"{list(OUTPUT_NAMES)} (then chart confidences among {list(CONFIDENCE_NAMES)}), or "
                             f"{list(EMBEDDING_OUTPUT_NAMES)} (CSE)")
        self.output_names = names
        self.input_name = self.session.get_inputs()[0].name
        self._vertex_embeddings, self.class_to_mesh_name, self._converters = {}, {}, {}
        if self.is_cse:
            from .vertex_embeddings import load_vertex_embeddings

            d = self.session.get_outputs()[3].shape[1]
            self._vertex_embeddings, self.class_to_mesh_name = load_vertex_embeddings(
                onnx_path, self.session.get_modelmeta().custom_metadata_map, d if isinstance(d, int) else None)

    def vertex_embeddings(self, mesh_name: str) -> torch.Tensor:
        """(V, D) vertex embeddings of mesh `mesh_name` of a CSE export (from its .vertex_embeddings.npz)."""
        if mesh_name not in self._vertex_embeddings:
            raise KeyError(f"no vertex embeddings for mesh '{mesh_name}' in this export (it has "
                           f"{sorted(self._vertex_embeddings)})")
        return self._vertex_embeddings[mesh_name]

    def cse_converter(self, charts: str = "none", **kwargs):
        """The `postprocess.CseResultsConverter` of a CSE export (its vertex embeddings and class -> mesh map)."""
        from ..postprocess.cse import CseResultsConverter

        if not self.is_cse:
            raise ValueError("cse_converter: not a CSE export (its outputs are chart maps)")
        key = (charts, tuple(sorted(kwargs.items())))
        if key not in self._converters:
            self._converters[key] = CseResultsConverter(vertex_embeddings=self.vertex_embeddings,
                                                        class_to_mesh_name=self.class_to_mesh_name, charts=charts,
                                                        **kwargs)
        return self._converters[key]

    def cse_results(self, instances: Instances, charts: str = "none") -> list:
        """The documented post-processing of a CSE export: one `DensePoseEmbeddingResult` per person (vertex map
        over its integer box, -1 off the body), by the same `CseResultsConverter` as eager results."""
        return self.cse_converter(charts)(instances.pred_boxes, instances.pred_densepose,
                                          instances.pred_classes if instances.has("pred_classes") else None)

    def preprocess(self, image_bgr: np.ndarray) -> Dict:
        return preprocess_bgr_image(image_bgr, self.input_format, self.min_size, self.max_size)

    def run_tensor(self, image_chw: torch.Tensor) -> Instances:
        """(3, H, W) uint8 network input (already resized, INPUT.FORMAT) -> Instances in its pixels."""
        h, w = int(image_chw.shape[-2]), int(image_chw.shape[-1])
        x = image_chw.numpy()[None]
        if h < MIN_SIDE or w < MIN_SIDE:  # graph needs >= 65 px: pad (border features differ slightly)
            x = np.pad(x, ((0, 0), (0, 0), (0, max(0, MIN_SIDE - h)), (0, max(0, MIN_SIDE - w))))
        boxes, scores, classes, *maps = (torch.from_numpy(np.asarray(o)) for o in
                                          self.session.run(None, {self.input_name: x}))
        if h < MIN_SIDE or w < MIN_SIDE:
            boxes = clip_boxes(boxes, h, w)
        if self.is_cse:
            densepose = DensePoseEmbeddingPredictorOutput(**dict(zip(EMBEDDING_NAMES, maps)))
        else:
            densepose = DensePoseChartPredictorOutput.from_tensors(self.output_names[3:], maps)
        return Instances((h, w), pred_boxes=boxes, scores=scores, pred_classes=classes.long(),
                         pred_densepose=densepose)

    def __call__(self, image_bgr: np.ndarray) -> Dict:
        inputs = self.preprocess(image_bgr)
        instances = self.run_tensor(inputs["image"])
        return {"instances": detector_postprocess(instances, inputs["height"], inputs["width"])}
