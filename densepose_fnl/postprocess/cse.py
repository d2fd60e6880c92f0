"""CSE inference results: per person the vertex map of its box and, for SMPL, its DensePose chart.

The pixel -> vertex matching itself is `postprocess.vertex_search` (re-exported here: `closest_vertices`,
`resample_to_box`, `squared_euclidean_distance_matrix`, `vertices_at_points`, `VertexIndex`).

Inference results (`CseResultsConverter`): per person a `DensePoseEmbeddingResult` with the vertex map over
its box, and, for SMPL, the DensePose chart (I, U, V) of each vertex (`VertexChartMap`, read from the
official ``SMPL_subdiv.mat`` / ``SMPL_SUBDIV_TRANSFORM.mat``), so CSE models feed the chart paths (IUV
images, chart visualizers) too. Everything here starts from Instances (pred_boxes, pred_classes,
pred_densepose = DensePoseEmbeddingPredictorOutput) and a vertex-embeddings callable, whatever runtime made them.
"""
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .vertex_search import (VertexIndex, closest_vertices, resample_to_box, squared_euclidean_distance_matrix,
                            vertices_at_points)

__all__ = ["CHART_MESH_NAMES", "ChartFileMissingError", "CseResultsConverter", "VertexChartMap", "VertexIndex",
           "closest_vertices", "is_cse_config", "predictor_vertex_embeddings", "resample_to_box",
           "squared_euclidean_distance_matrix", "vertices_at_points"]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- charts
# the meshes whose vertices the eval data's subdivision files chart: SMPL, and the synthetic body (its synthetic
# eval data is the same body; a mismatched directory is caught by the vertex count)
CHART_MESH_NAMES = ("smpl_27554", "synthetic_body")


class ChartFileMissingError(FileNotFoundError):
    """A file of the vertex -> chart conversion is not on disk; the one-line message names it."""


class VertexChartMap:
    """Mesh vertex -> DensePose chart point (part I in 1..24, U, V in [0, 1]).

    The official ``SMPL_subdiv.mat`` lists the chart points of the subdivided SMPL (U_subdiv, V_subdiv,
    Part_ID_subdiv) and ``SMPL_SUBDIV_TRANSFORM.mat`` the 1-based mesh vertex of each point (``index``),
    the map detectron2's evaluation uses from chart points to the 27,554 vertices (``PDIST_transform``) and
    the vertex numbering of its CSE annotations (``dp_vertex`` = index - 1). A vertex on a chart seam has one
    point per chart: the first in file order is taken. A vertex without any point maps to part 0 (none).
    """

    def __init__(self, parts: torch.Tensor, uv: torch.Tensor, source: str = ""):
        if parts.dim() != 1 or uv.shape != (len(parts), 2):
            raise ValueError(f"expected parts (V,) and uv (V, 2), got {tuple(parts.shape)}, {tuple(uv.shape)}")
        self.parts = parts.long()
        self.uv = uv.float()
        self.source = source

    @property
    def num_vertices(self) -> int:
        return len(self.parts)

    @classmethod
    def from_eval_data(cls, eval_data_dir: Union[None, str, os.PathLike, "object"] = None) -> "VertexChartMap":
        """From the two subdivision files in the eval data directory (or a config's
        DENSEPOSE_EVALUATION.EVAL_DATA_DIR, else $DENSEPOSE_EVAL_DATA, else ./datasets/densepose_eval_data)."""
        from ..evaluation.eval_data import resolve_eval_data_dir

        return _chart_map_from_dir(str(resolve_eval_data_dir(eval_data_dir).absolute()))

    def __call__(self, vertices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(H, W) vertex map (-1 = background) -> labels (H, W) int64 and uv (2, H, W) float32, 0 off the body."""
        vertices = torch.as_tensor(vertices, dtype=torch.long)
        if vertices.numel() and int(vertices.max()) >= self.num_vertices:
            raise ValueError(f"vertex {int(vertices.max())} out of range: {self.source} maps {self.num_vertices} "
                             "vertices")
        fg = vertices >= 0
        idx = vertices.clamp(min=0).cpu()
        labels = torch.where(fg, self.parts[idx], torch.zeros((), dtype=torch.long))
        uv = self.uv[idx].permute(2, 0, 1) * fg[None]
        return labels, uv.contiguous()


def _read_mat(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    from scipy.io import loadmat

    if not path.is_file():
        raise ChartFileMissingError(
            f"vertex -> chart (I, U, V) conversion: {path} not found (the DensePose eval data file {path.name}; "
            "set DENSEPOSE_EVALUATION.EVAL_DATA_DIR or $DENSEPOSE_EVAL_DATA to its directory)")
    data = loadmat(str(path))
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: no variable(s) {missing} (has {sorted(k for k in data if not k.startswith('__'))})")
    return {k: np.asarray(data[k]).reshape(-1) for k in keys}


@lru_cache()
def _chart_map_from_dir(eval_data_dir: str) -> VertexChartMap:
    from ..evaluation.eval_data import SMPL_SUBDIV_FILE, SUBDIV_TRANSFORM_FILE

    d = Path(eval_data_dir)
    subdiv = _read_mat(d / SMPL_SUBDIV_FILE, ("U_subdiv", "V_subdiv", "Part_ID_subdiv"))
    index = _read_mat(d / SUBDIV_TRANSFORM_FILE, ("index",))["index"].astype(np.int64) - 1
    if len(index) != len(subdiv["Part_ID_subdiv"]) or index.min() < 0:
        raise ValueError(f"{d / SUBDIV_TRANSFORM_FILE}: {len(index)} 1-based indices for "
                         f"{len(subdiv['Part_ID_subdiv'])} points of {SMPL_SUBDIV_FILE}")
    n = int(index.max()) + 1
    vertex_ids, first = np.unique(index, return_index=True)  # first point of each vertex, in file order
    parts = np.zeros(n, dtype=np.int64)
    uv = np.zeros((n, 2), dtype=np.float32)
    parts[vertex_ids] = subdiv["Part_ID_subdiv"][first].astype(np.int64)
    uv[vertex_ids, 0] = subdiv["U_subdiv"][first]
    uv[vertex_ids, 1] = subdiv["V_subdiv"][first]
    return VertexChartMap(torch.from_numpy(parts), torch.from_numpy(uv), source=str(d / SUBDIV_TRANSFORM_FILE))


# ---------------------------------------------------------------------------------------------- results
CHART_MODES = ("none", "auto", "required")


class CseResultsConverter:
    """Instances of a CSE model -> one `DensePoseEmbeddingResult` per person.

    vertex_embeddings(mesh name) -> (V, D): the model's embedder (`predictor_vertex_embeddings`), called once
    per mesh. class_to_mesh_name: predicted class -> mesh (DATASETS.CLASS_TO_MESH_NAME_MAPPING; detectron2's
    default class 0 when the Instances have no pred_classes). charts: "none" (vertices only), "auto" (the
    chart too where the mesh has one and its files are there), "required" (a mesh without a chart or a missing
    file is an error naming it: IUV images and chart visualizers need it).
    """

    def __init__(self, *, vertex_embeddings: Callable[[str], torch.Tensor], class_to_mesh_name: Dict[int, str],
                 charts: str = "auto", eval_data_dir: Union[None, str, os.PathLike] = None,
                 chart_maps: Optional[Dict[str, VertexChartMap]] = None, chunk_size: Optional[int] = None):
        if charts not in CHART_MODES:
            raise ValueError(f"charts must be one of {CHART_MODES}, got {charts!r}")
        if not class_to_mesh_name:
            raise ValueError("CSE results need DATASETS.CLASS_TO_MESH_NAME_MAPPING (class -> mesh name)")
        self._vertex_embeddings = vertex_embeddings
        self.class_to_mesh_name = {int(k): str(v) for k, v in class_to_mesh_name.items()}
        self.charts = charts
        self.eval_data_dir = eval_data_dir
        self._chart_maps: Dict[str, Optional[VertexChartMap]] = dict(chart_maps or {})
        self._embeddings: Dict[str, torch.Tensor] = {}
        self._indexes: Dict[str, VertexIndex] = {}
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, cfg, vertex_embeddings: Callable[[str], torch.Tensor], charts: str = "auto",
                    **kwargs) -> "CseResultsConverter":
        """DATASETS.CLASS_TO_MESH_NAME_MAPPING, DENSEPOSE_EVALUATION.EVAL_DATA_DIR; also applies
        DATASETS.MESH_DATA_DIR (the mesh files the CSE visualizers read)."""
        from ..data.meshes import set_mesh_data_dir

        set_mesh_data_dir(cfg)
        mapping = {int(k): str(v) for k, v in cfg.DATASETS.CLASS_TO_MESH_NAME_MAPPING.items()}
        return cls(vertex_embeddings=vertex_embeddings, class_to_mesh_name=mapping, charts=charts,
                   eval_data_dir=cfg.DENSEPOSE_EVALUATION.EVAL_DATA_DIR or None, **kwargs)

    def mesh_name(self, pred_class: int) -> str:
        if int(pred_class) not in self.class_to_mesh_name:
            raise KeyError(f"predicted class {int(pred_class)} has no mesh in DATASETS.CLASS_TO_MESH_NAME_MAPPING "
                           f"{self.class_to_mesh_name}")
        return self.class_to_mesh_name[int(pred_class)]

    def vertex_embeddings(self, mesh_name: str) -> torch.Tensor:
        if mesh_name not in self._embeddings:
            with torch.no_grad():
                self._embeddings[mesh_name] = torch.as_tensor(self._vertex_embeddings(mesh_name)).detach().float().cpu()
        return self._embeddings[mesh_name]

    def vertex_index(self, mesh_name: str) -> VertexIndex:
        """The mesh's `VertexIndex` (norms, dimension, KD-tree: built once, reused by every box)."""
        if mesh_name not in self._indexes:
            self._indexes[mesh_name] = VertexIndex(self.vertex_embeddings(mesh_name))
        return self._indexes[mesh_name]

    def chart_map(self, mesh_name: str) -> Optional[VertexChartMap]:
        """The mesh's vertex -> chart map under this converter's `charts` mode (None: no chart)."""
        if self.charts == "none":
            return None
        if mesh_name not in self._chart_maps:
            if mesh_name not in CHART_MESH_NAMES:
                if self.charts == "required":
                    raise ValueError(f"mesh '{mesh_name}' has no DensePose chart parametrisation (only "
                                     f"{', '.join(CHART_MESH_NAMES)}): its vertices cannot become I, U, V")
                self._chart_maps[mesh_name] = None
            else:
                try:
                    self._chart_maps[mesh_name] = VertexChartMap.from_eval_data(self.eval_data_dir)
                except ChartFileMissingError as e:
                    if self.charts == "required":
                        raise
                    logger.info("no charts for mesh %s: %s", mesh_name, e)
                    self._chart_maps[mesh_name] = None
        return self._chart_maps[mesh_name]

    def check_charts(self) -> None:
        """Load the chart map of every mapped mesh now (so a missing file fails before any image)."""
        for name in sorted(set(self.class_to_mesh_name.values())):
            self.chart_map(name)

    def __call__(self, boxes_xyxy: torch.Tensor, output, pred_classes: Optional[torch.Tensor] = None
                 ) -> List["DensePoseEmbeddingResult"]:
        from ..structures import DensePoseEmbeddingResult
        from .charts import int_box_xywh

        if len(boxes_xyxy) != len(output):
            raise ValueError(f"{len(boxes_xyxy)} boxes but {len(output)} DensePose outputs")
        if pred_classes is None:
            pred_classes = torch.zeros(len(boxes_xyxy), dtype=torch.long)
        results = []
        for k in range(len(boxes_xyxy)):
            mesh = self.mesh_name(int(pred_classes[k]))
            index = self.vertex_index(mesh)
            _, _, w, h = int_box_xywh(boxes_xyxy[k])
            emb = output.embedding[k].detach().float().cpu()
            segm = output.coarse_segm[k].detach().float().cpu()
            vertices = closest_vertices(emb, segm, (0, 0, w, h), index, chunk_size=self.chunk_size)
            chart = self.chart_map(mesh)
            labels = uv = None
            if chart is not None:
                if chart.num_vertices != len(index):
                    raise ValueError(f"mesh '{mesh}': {len(index)} vertex embeddings but {chart.source} maps "
                                     f"{chart.num_vertices} vertices")
                labels, uv = chart(vertices)
            results.append(DensePoseEmbeddingResult(vertices=vertices, mesh_name=mesh, embedding=emb,
                                                    coarse_segm=segm, labels=labels, uv=uv))
        return results


def is_cse_config(cfg) -> bool:
    """Whether the config's DensePose head is the CSE (embedding) predictor."""
    return cfg.MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME == "DensePoseEmbeddingPredictor"


def predictor_vertex_embeddings(predictor) -> Callable[[str], torch.Tensor]:
    """mesh name -> (V, D) vertex embeddings of a predictor's CSE model: its own ``vertex_embeddings``
    callable if it has one (any runtime may provide it), else its PyTorch model's ``roi_heads.embedder``."""
    own = getattr(predictor, "vertex_embeddings", None)
    if callable(own):
        return own
    model = getattr(predictor, "model", predictor)
    embedder = getattr(getattr(model, "roi_heads", None), "embedder", None)
    if embedder is None:
        raise ValueError(f"{type(predictor).__name__} gives CSE outputs but no vertex embeddings (neither a "
                         "vertex_embeddings(mesh_name) method nor model.roi_heads.embedder)")
    return embedder
