"""Continuous surface embedding (CSE) losses (detectron2's `DensePoseCseLoss`, MODEL.ROI_DENSEPOSE_HEAD.LOSS_NAME
"DensePoseCseLoss"), for the DensePoseEmbeddingPredictor and the model's mesh embedder (`roi_heads.embedder`).

Ground truth: per annotated person, points (x, y) in its 256 x 256 box frame with the 0-based vertex
`vertex_ids` of mesh `mesh_name` (the dataset's dp_vertex / ref_model), and optionally the coarse dp_masks.

* loss_densepose_E<mesh>, one per mesh of the embedder, weight CSE.EMBED_LOSS_WEIGHT: the predictor's
  embedding sampled bilinearly at the points that fall inside their proposal (as the chart losses sample),
  rows L2-normalised (e), against the mesh's vertex embeddings (v_k, `embedder(mesh)`, unit rows); the
  scores are s_k = -|e - v_k|^2 / CSE.EMBEDDING_DIST_GAUSS_SIGMA, and the loss, over the points of that
  mesh's annotations (mean over the points), is
  - EmbeddingLoss: the cross-entropy of s against the annotated vertex;
  - SoftEmbeddingLoss: the cross-entropy of s against the soft target softmax_k(-g(vertex, k) /
    CSE.GEODESIC_DIST_GAUSS_SIGMA), g the mesh's geodesic distances (`create_mesh(mesh).geodists`, rows of
    the annotated vertices only: SMPL's full table is ~3 GB).
  A mesh with no usable point in the batch gets `embedding.sum() * 0 + embedder(mesh).sum() * 0`.
* loss_densepose_S, weight INDEX_WEIGHTS: the coarse segmentation cross-entropy against the dp_masks of
  the packed instances (the chart loss's S term; zero, with its graph, when some instance has no masks).

No annotated point in the batch: every term is its zero with its graph (DistributedDataParallel needs the same
graph on every rank). The cycle losses (CSE.SHAPE_TO_SHAPE_CYCLE_LOSS / PIX_TO_SHAPE_CYCLE_LOSS) and
COARSE_SEGM_TRAINED_BY_MASKS are not implemented: turning them on is an error.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ...data.meshes import MeshCatalog
from ...postprocess.vertex_search import squared_euclidean_distance_matrix
from ...structures import Instances
from ...structures.mesh import create_mesh
from ..densepose.embedder import normalize_embeddings
from ..registry import DENSEPOSE_LOSS_REGISTRY
from .utils import PointSampler, _pack_boxes, coarse_segm_loss, iter_annotated_instances

__all__ = ["DensePoseCseLoss", "EmbeddingLoss", "SoftEmbeddingLoss", "PackedCseAnnotations",
           "pack_cse_annotations", "EMBED_LOSS_NAMES"]


@dataclass
class PackedCseAnnotations:
    """All CSE ground truth of a batch in flat tensors (K points, N instances with CSE annotations).

    x, y: (K,) 256-frame coordinates; vertex_ids: (K,) annotated vertices; mesh_ids: (K,) catalog id of each
    point's mesh; point_box, box_xywh_gt, box_xywh_est, box_index, segm: as `PackedChartAnnotations` (so
    `PointSampler` and `coarse_segm_loss` take either)."""

    x: torch.Tensor
    y: torch.Tensor
    vertex_ids: torch.Tensor
    mesh_ids: torch.Tensor
    point_box: torch.Tensor
    box_xywh_gt: torch.Tensor
    box_xywh_est: torch.Tensor
    box_index: torch.Tensor
    segm: Optional[torch.Tensor]


def pack_cse_annotations(proposals_with_gt: List[Instances]) -> Optional[PackedCseAnnotations]:
    """The CSE ground truth of the proposals whose DensePose data has vertex ids (chart-only annotations are
    skipped); None if nothing is left."""
    cols = {k: [] for k in ("x", "y", "vertex_ids", "mesh_ids", "point_box", "gt", "est", "index", "segm")}
    for row, dp, gt, est in iter_annotated_instances(proposals_with_gt, usable=lambda d: d.vertex_ids is not None):
        n_inst, device = len(cols["gt"]), dp.x.device
        cols["x"].append(dp.x)
        cols["y"].append(dp.y)
        cols["vertex_ids"].append(dp.vertex_ids)
        cols["mesh_ids"].append(torch.full((len(dp.x),), dp.mesh_id, dtype=torch.long, device=device))
        cols["point_box"].append(torch.full((len(dp.x),), n_inst, dtype=torch.long, device=device))
        cols["gt"].append(gt)
        cols["est"].append(est)
        cols["index"].append(row)
        cols["segm"].append(dp.segm)
    if not cols["gt"]:
        return None
    return PackedCseAnnotations(
        x=torch.cat(cols["x"]).float(),
        y=torch.cat(cols["y"]).float(),
        vertex_ids=torch.cat(cols["vertex_ids"]).long(),
        mesh_ids=torch.cat(cols["mesh_ids"]),
        point_box=torch.cat(cols["point_box"]),
        **_pack_boxes(cols),
    )


class EmbeddingLoss:
    """Cross-entropy of the embedding-distance scores against the annotated vertex, per mesh."""

    def __init__(self, embdist_gauss_sigma: float):
        if not embdist_gauss_sigma > 0:
            raise ValueError(f"CSE.EMBEDDING_DIST_GAUSS_SIGMA must be > 0, got {embdist_gauss_sigma}")
        self.embdist_gauss_sigma = float(embdist_gauss_sigma)

    @classmethod
    def from_config(cls, cfg) -> "EmbeddingLoss":
        return cls(cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDING_DIST_GAUSS_SIGMA)

    def scores(self, pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor) -> torch.Tensor:
        """(J, V) unnormalised log-probabilities of each point's vertex: -|e - v|^2 / sigma."""
        return squared_euclidean_distance_matrix(pixel_embeddings, vertex_embeddings) / (-self.embdist_gauss_sigma)

    def mesh_loss(self, mesh_name: str, pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor,
                  vertex_ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scores(pixel_embeddings, vertex_embeddings), vertex_ids, ignore_index=-1)

    def __call__(self, packed: PackedCseAnnotations, sampler: PointSampler, embedding: torch.Tensor,
                 embedder: nn.Module) -> Dict[str, torch.Tensor]:
        """{mesh name: loss} for every mesh of the embedder (a zero with its graph where no point is usable)."""
        losses = {}
        for mesh_id in packed.mesh_ids.unique().tolist():
            mesh_name = MeshCatalog.get_mesh_name(mesh_id)
            valid = sampler.valid & (packed.mesh_ids == mesh_id)
            if not bool(valid.any()):
                continue
            pixel_embeddings = normalize_embeddings(sampler.sample(embedding)[valid])
            losses[mesh_name] = self.mesh_loss(mesh_name, pixel_embeddings, embedder(mesh_name),
                                               packed.vertex_ids[valid])
        for mesh_name in embedder.mesh_names:
            if mesh_name not in losses:
                losses[mesh_name] = self.fake_value(embedding, embedder, mesh_name)
        return losses

    @staticmethod
    def fake_value(embedding: torch.Tensor, embedder: nn.Module, mesh_name: str) -> torch.Tensor:
        return embedding.sum() * 0 + embedder(mesh_name).sum() * 0

    def fake_values(self, embedding: torch.Tensor, embedder: nn.Module) -> Dict[str, torch.Tensor]:
        return {m: self.fake_value(embedding, embedder, m) for m in embedder.mesh_names}


class SoftEmbeddingLoss(EmbeddingLoss):
    """Cross-entropy of the embedding-distance scores against geodesic-softened targets, per mesh."""

    def __init__(self, embdist_gauss_sigma: float, geodist_gauss_sigma: float):
        super().__init__(embdist_gauss_sigma)
        if not geodist_gauss_sigma > 0:
            raise ValueError(f"CSE.GEODESIC_DIST_GAUSS_SIGMA must be > 0, got {geodist_gauss_sigma}")
        self.geodist_gauss_sigma = float(geodist_gauss_sigma)

    @classmethod
    def from_config(cls, cfg) -> "SoftEmbeddingLoss":
        cse = cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE
        return cls(cse.EMBEDDING_DIST_GAUSS_SIGMA, cse.GEODESIC_DIST_GAUSS_SIGMA)

    def mesh_loss(self, mesh_name: str, pixel_embeddings: torch.Tensor, vertex_embeddings: torch.Tensor,
                  vertex_ids: torch.Tensor) -> torch.Tensor:
        geodists = create_mesh(mesh_name).geodists
        if geodists is None:
            raise FileNotFoundError(f"SoftEmbeddingLoss needs the geodesic distances of mesh '{mesh_name}' "
                                    "(its MeshInfo has no geodists file)")
        rows = torch.as_tensor(geodists[vertex_ids]).to(device=vertex_embeddings.device, dtype=torch.float32)
        if rows.shape[1] != vertex_embeddings.shape[0]:
            raise ValueError(f"mesh '{mesh_name}': geodesic table has {rows.shape[1]} vertices, the embedder "
                             f"{vertex_embeddings.shape[0]}")
        target = F.softmax(rows / (-self.geodist_gauss_sigma), dim=1)
        log_p = F.log_softmax(self.scores(pixel_embeddings, vertex_embeddings), dim=1)
        return (-target * log_p).sum(1).mean()


EMBED_LOSS_NAMES = {"EmbeddingLoss": EmbeddingLoss, "SoftEmbeddingLoss": SoftEmbeddingLoss}


class DensePoseCseLoss:
    """loss_densepose_S (coarse segmentation) and loss_densepose_E<mesh> (embedding, per mesh); called as
    `loss(proposals_with_gt, predictor_outputs, embedder=roi_heads.embedder)`."""

    def __init__(self, heatmap_size: int, w_segm: float, w_embed: float, n_segm_chan: int, embed_loss: EmbeddingLoss):
        if n_segm_chan not in (2, 15):
            raise ValueError(f"NUM_COARSE_SEGM_CHANNELS must be 2 or 15, got {n_segm_chan}")
        self.heatmap_size = int(heatmap_size)
        self.w_segm, self.w_embed = float(w_segm), float(w_embed)
        self.n_segm_chan = int(n_segm_chan)
        self.embed_loss = embed_loss

    @classmethod
    def from_config(cls, cfg) -> "DensePoseCseLoss":
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        cse = h.CSE
        if h.COARSE_SEGM_TRAINED_BY_MASKS:
            raise NotImplementedError(
                "MODEL.ROI_DENSEPOSE_HEAD.COARSE_SEGM_TRAINED_BY_MASKS: training the coarse segmentation by "
                "instance masks is not supported; set it to False (trained by the DensePose dp_masks)")
        for key in ("SHAPE_TO_SHAPE_CYCLE_LOSS", "PIX_TO_SHAPE_CYCLE_LOSS"):
            if cse[key].ENABLED:
                raise NotImplementedError(f"MODEL.ROI_DENSEPOSE_HEAD.CSE.{key}: the CSE cycle losses are not "
                                          "implemented; set ENABLED to False")
        if cse.EMBED_LOSS_NAME not in EMBED_LOSS_NAMES:
            raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBED_LOSS_NAME '{cse.EMBED_LOSS_NAME}' is unknown "
                             f"(one of {sorted(EMBED_LOSS_NAMES)})")
        return cls(heatmap_size=h.HEATMAP_SIZE, w_segm=h.INDEX_WEIGHTS, w_embed=cse.EMBED_LOSS_WEIGHT,
                   n_segm_chan=h.NUM_COARSE_SEGM_CHANNELS,
                   embed_loss=EMBED_LOSS_NAMES[cse.EMBED_LOSS_NAME].from_config(cfg))

    def fake_losses(self, outputs: Any, embedder: nn.Module) -> Dict[str, torch.Tensor]:
        losses = {"loss_densepose_S": outputs.coarse_segm.sum() * 0}
        for mesh_name, value in self.embed_loss.fake_values(outputs.embedding, embedder).items():
            losses[f"loss_densepose_E{mesh_name}"] = value
        return losses

    def __call__(self, proposals_with_gt: List[Instances], outputs: Any, embedder: Optional[nn.Module] = None,
                 **kwargs) -> Dict[str, torch.Tensor]:
        if embedder is None:
            raise ValueError("DensePoseCseLoss needs the model's mesh embedder (MODEL.ROI_DENSEPOSE_HEAD.CSE."
                             "EMBEDDERS); a chart model trains with DensePoseChartWithConfidenceLoss")
        packed = pack_cse_annotations(proposals_with_gt) if proposals_with_gt else None
        if packed is None:
            return self.fake_losses(outputs, embedder)
        device = outputs.embedding.device
        packed = type(packed)(**{k: (None if t is None else t.to(device)) for k, t in vars(packed).items()})
        sampler = PointSampler.create(packed, tuple(outputs.embedding.shape[2:]))
        losses = {"loss_densepose_S": self.w_segm * coarse_segm_loss(outputs.coarse_segm, packed, self.heatmap_size,
                                                                     self.n_segm_chan)}
        for mesh_name, value in self.embed_loss(packed, sampler, outputs.embedding, embedder).items():
            losses[f"loss_densepose_E{mesh_name}"] = self.w_embed * value
        return losses


DENSEPOSE_LOSS_REGISTRY._do_register("DensePoseCseLoss", DensePoseCseLoss)
