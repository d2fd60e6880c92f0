"""DensePose result containers: raw predictor outputs per RoI (chart or CSE), and per-person chart results.

Chart confidences (Neverova et al., NeurIPS 2019; Sanakoyeu et al., CVPR 2020) extend both with the
optional fields of detectron2's `decorate_predictor_output_class_with_confidences` /
`DensePoseChartResultWithConfidences`: sigma_1, sigma_2, kappa_u, kappa_v, fine_segm_confidence,
coarse_segm_confidence (None when the model does not estimate them)."""
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Union

import torch

# the confidence fields, in detectron2's order; a predictor outputs the enabled ones in this order
CONFIDENCE_NAMES = ("sigma_1", "sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence")
CHART_NAMES = ("coarse_segm", "fine_segm", "u", "v")


def _apply(value, fn):
    return None if value is None else fn(value)


class _PerRoIFields:
    """What every predictor output dataclass shares: N RoIs along dim 0 of each tensor field (None fields stay
    None), indexed, moved and concatenated field by field."""

    def __len__(self) -> int:
        return self.coarse_segm.size(0)

    def _map(self, fn):
        return type(self)(**{f.name: _apply(getattr(self, f.name), fn) for f in fields(self)})

    def __getitem__(self, item: Union[int, slice, torch.Tensor]):
        if isinstance(item, int):
            item = slice(item, item + 1)
        return self._map(lambda t: t[item])

    def to(self, device):
        return self._map(lambda t: t.to(device))

    def tensors(self) -> Dict[str, torch.Tensor]:
        """The fields that are set (not None), in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @staticmethod
    def cat(outputs: list):
        cls = type(outputs[0])
        return cls(**{f.name: (None if getattr(outputs[0], f.name) is None else
                               torch.cat([getattr(o, f.name) for o in outputs], 0)) for f in fields(cls)})


@dataclass
class DensePoseChartPredictorOutput(_PerRoIFields):
    """Raw chart predictor output for N RoIs, each map HEATMAP_SIZE x HEATMAP_SIZE over its box.

    coarse_segm: (N, 2 or 15, S, S) logits (background vs person, or background + 14 coarse parts)
    fine_segm:   (N, 25, S, S) logits (background + 24 fine parts I)
    u, v:        (N, 25, S, S) per-part chart coordinates
    """

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    @staticmethod
    def from_tensors(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> "DensePoseChartPredictorOutput":
        """The output holding `tensors` under `names` (the chart fields, then any confidence fields): the
        class with confidences if any confidence is among them (a predictor's / an export's outputs)."""
        named = dict(zip(names, tensors))
        if len(named) != len(names) or len(names) != len(tensors):
            raise ValueError(f"{len(tensors)} tensors for the names {list(names)}")
        unknown = set(named) - set(CHART_NAMES) - set(CONFIDENCE_NAMES)
        if unknown or any(n not in named for n in CHART_NAMES):
            raise ValueError(f"not chart predictor output names: {list(names)}")
        if any(n in named for n in CONFIDENCE_NAMES):
            return DensePoseChartPredictorOutputWithConfidences(**named)
        return DensePoseChartPredictorOutput(**named)


@dataclass
class DensePoseChartPredictorOutputWithConfidences(DensePoseChartPredictorOutput):
    """Chart predictor output with confidences (detectron2's DensePoseChartPredictorOutputWithConfidences):

    sigma_2, kappa_u, kappa_v: (N, 25, S, S) raw UV-confidence estimates (before softplus; detectron2
        applies softplus + UV_CONFIDENCE.EPSILON in the loss, `uv_sigma` below does it for display);
        sigma_2 for TYPE iid_iso, all three for indep_aniso; sigma_1 is never estimated (kept for the format);
    fine_segm_confidence, coarse_segm_confidence: (N, 1, S, S) softplus(.) + SEGM_CONFIDENCE.EPSILON, by
        which fine_segm / coarse_segm have already been multiplied.
    """

    sigma_1: Optional[torch.Tensor] = None
    sigma_2: Optional[torch.Tensor] = None
    kappa_u: Optional[torch.Tensor] = None
    kappa_v: Optional[torch.Tensor] = None
    fine_segm_confidence: Optional[torch.Tensor] = None
    coarse_segm_confidence: Optional[torch.Tensor] = None


EMBEDDING_NAMES = ("embedding", "coarse_segm")


@dataclass
class DensePoseEmbeddingPredictorOutput(_PerRoIFields):
    """Raw continuous-surface-embedding (CSE) predictor output for N RoIs (detectron2's
    DensePoseEmbeddingPredictorOutput, same fields and order), each map HEATMAP_SIZE x HEATMAP_SIZE over its box:

    embedding:   (N, D, S, S) per-pixel embeddings (D = CSE.EMBED_SIZE), not normalised; a pixel's mesh
        vertex is the nearest of the embedder's vertex embeddings (`postprocess.closest_vertices`)
    coarse_segm: (N, K, S, S) logits (K = NUM_COARSE_SEGM_CHANNELS; argmax 0 = background)
    """

    embedding: torch.Tensor
    coarse_segm: torch.Tensor


@dataclass
class DensePoseChartResult:
    """One person's DensePose over its box (detectron2's `DensePoseChartResult`).

    labels: (H, W) int64 part index, 0 = background, 1..24 = fine parts I
    uv:     (2, H, W) float32 U and V in [0, 1]
    H, W are the box height and width in pixels, truncated to integers as detectron2 does (at least 1).
    """

    labels: torch.Tensor
    uv: torch.Tensor

    def to(self, device) -> "DensePoseChartResult":
        return type(self)(**{f.name: _apply(getattr(self, f.name), lambda t: t.to(device)) for f in fields(self)})

    def confidences(self) -> Dict[str, torch.Tensor]:
        """The confidence maps this result carries (none for a plain result)."""
        return {n: getattr(self, n) for n in CONFIDENCE_NAMES if getattr(self, n, None) is not None}


@dataclass
class DensePoseChartResultWithConfidences(DensePoseChartResult):
    """A chart result with confidences over the box (detectron2's `DensePoseChartResultWithConfidences`),
    each (H, W) float32: the per-part ones (sigma_2, kappa_u, kappa_v, raw as the predictor outputs them)
    read from the channel of the pixel's part, 0 on the background; the segmentation confidences (one
    channel) over the whole box."""

    sigma_1: Optional[torch.Tensor] = None
    sigma_2: Optional[torch.Tensor] = None
    kappa_u: Optional[torch.Tensor] = None
    kappa_v: Optional[torch.Tensor] = None
    fine_segm_confidence: Optional[torch.Tensor] = None
    coarse_segm_confidence: Optional[torch.Tensor] = None


@dataclass
class DensePoseEmbeddingResult:
    """One person's continuous-surface-embedding (CSE) result over its box (H, W as a chart result's).

    vertices:    (H, W) int64 the pixel's closest mesh vertex (0-based), -1 on the background
                 (`postprocess.closest_vertices`: detectron2's resampling, distance and masking)
    mesh_name:   the mesh the vertices index (DATASETS.CLASS_TO_MESH_NAME_MAPPING of the predicted class)
    embedding:   (D, S, S) float32 the predictor's embedding map of the person, box-relative at the
                 predictor's resolution (bilinearly resized to (H, W) it is the per-pixel embedding; kept
                 small on purpose: D x H x W floats per person would dominate a dump)
    coarse_segm: (K, S, S) float32 the coarse segmentation logits (argmax 0 = background)
    labels, uv:  optional DensePose chart (I, U, V) of each pixel's vertex, as a chart result's
                 (`postprocess.cse.VertexChartMap`: SMPL through the official subdivision files), else None
    """

    vertices: torch.Tensor
    mesh_name: str
    embedding: Optional[torch.Tensor] = None
    coarse_segm: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    uv: Optional[torch.Tensor] = None

    def to(self, device) -> "DensePoseEmbeddingResult":
        moved = {f.name: _apply(getattr(self, f.name), lambda t: t.to(device)) for f in fields(self)
                 if f.name != "mesh_name"}
        return type(self)(mesh_name=self.mesh_name, **moved)

    @property
    def has_charts(self) -> bool:
        return self.labels is not None and self.uv is not None

    def confidences(self) -> Dict[str, torch.Tensor]:
        return {}


def uv_sigma(raw_sigma_2: torch.Tensor, epsilon: float = 0.01) -> torch.Tensor:
    """The UV standard deviation sigma (in chart units) from the raw sigma_2 estimate: the loss models the
    variance as softplus(raw) + epsilon (detectron2's IIDIsotropicGaussianUVLoss), sigma is its root."""
    return torch.sqrt(torch.nn.functional.softplus(raw_sigma_2) + epsilon)
