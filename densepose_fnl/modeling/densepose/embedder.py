"""Continuous surface embeddings (CSE): the vertex embedders of the meshes (detectron2 DensePose's
`Embedder`, `VertexFeatureEmbedder`, `VertexDirectEmbedder`), `roi_heads.embedder` of a CSE model.

A mesh's vertex embeddings are unit rows (V, D), D = CSE.EMBED_SIZE; a pixel's vertex is the nearest of them
to the predictor's embedding (`postprocess.closest_vertices`). One embedder per entry of
MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS, a submodule `embedder_<mesh name>`, built by its TYPE:

* vertex_feature: fixed per-vertex features (V, FEATURE_DIM) (a buffer; a parameter with FEATURES_TRAINABLE;
  detectron2 ships the SMPL ones as Laplace-Beltrami eigenfunctions, phi_smpl_27554_256.pkl) times a
  trainable projection `embeddings` (FEATURE_DIM, D), rows L2-normalised;
* vertex_direct: a trainable (V, D) table `embeddings`, rows L2-normalised.

Both start at zeros, as detectron2's; INIT_FILE (a pickle of {"features": ..., "embeddings": ...}, either
may be absent) is read at build time if given, else the values come from the checkpoint (MODEL.WEIGHTS
carries the features buffer). Nothing is downloaded: an INIT_FILE URL (detectron2's configs) is read as the
file of that name in the mesh data directory (DATASETS.MESH_DATA_DIR / $DENSEPOSE_MESH_DATA_DIR /
<datasets root>/densepose_meshes); a missing file is an error naming it. IS_TRAINABLE False freezes the
embedder.
"""
import logging
import os
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import urlparse

import torch
from torch import nn

from ..registry import DENSEPOSE_EMBEDDER_REGISTRY, get_from_registry

logger = logging.getLogger(__name__)

CSE_KEY = "MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS"


def normalize_embeddings(embeddings: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """Rows of (N, D) scaled to unit L2 norm; norms below `epsilon` are taken as `epsilon` (zero rows stay
    zero), detectron2's formula."""
    return embeddings / torch.clamp(embeddings.norm(dim=1, keepdim=True), min=epsilon)


def resolve_init_file(init_file: str, mesh_data_dir: Optional[str] = None, key: str = "INIT_FILE") -> Path:
    """The local file of an INIT_FILE: a path as is, a URL as the file of that name in the mesh data
    directory. FileNotFoundError (one line, naming the file and the config key) if it is not there."""
    from ...data.meshes import resolve_mesh_data_dir

    if "://" in init_file:
        path = resolve_mesh_data_dir(mesh_data_dir or None) / os.path.basename(urlparse(init_file).path)
        where = (f"{init_file} is never downloaded: put that file in the mesh data directory "
                 "(DATASETS.MESH_DATA_DIR / $DENSEPOSE_MESH_DATA_DIR / <datasets root>/densepose_meshes), set "
                 "INIT_FILE to a local file, or to '' when MODEL.WEIGHTS carries the vertex features")
    else:
        path = Path(init_file).expanduser()
        where = "set INIT_FILE to an existing file, or to '' when MODEL.WEIGHTS carries the vertex features"
    if not path.is_file():
        raise FileNotFoundError(f"{key}: vertex features file not found: {path.absolute()} ({where})")
    return path


class _VertexEmbedder(nn.Module):
    """What both embedder types share: spec keys, loading an init file, freezing."""

    # keys of an EMBEDDERS entry (all required, as detectron2 reads them all), beyond TYPE
    SPEC_KEYS = ("NUM_VERTICES", "IS_TRAINABLE", "INIT_FILE")
    INIT_NAMES = ("embeddings",)  # what an init file may hold

    @classmethod
    def _check_spec(cls, mesh_name: str, spec) -> None:
        key = f"{CSE_KEY}.{mesh_name}"
        missing = [k for k in cls.SPEC_KEYS if k not in spec]
        unknown = sorted(set(spec) - set(cls.SPEC_KEYS) - {"TYPE"})
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])
        if problems:
            raise ValueError(f"{key} (TYPE {spec.TYPE}): {'; '.join(problems)} (its keys: TYPE, "
                             f"{', '.join(cls.SPEC_KEYS)})")

    @classmethod
    def from_spec(cls, mesh_name: str, spec, embed_dim: int, mesh_data_dir: Optional[str] = None) -> nn.Module:
        cls._check_spec(mesh_name, spec)
        embedder = cls(embed_dim=embed_dim, **cls._kwargs(spec))
        if spec.INIT_FILE:
            path = resolve_init_file(spec.INIT_FILE, mesh_data_dir, f"{CSE_KEY}.{mesh_name}.INIT_FILE")
            embedder.load(str(path))
            logger.info("Embedder %s: %s read from %s", mesh_name, ", ".join(embedder.INIT_NAMES), path)
        if not spec.IS_TRAINABLE:
            embedder.requires_grad_(False)
        return embedder

    @torch.no_grad()
    def load(self, path: str) -> None:
        """Copy the INIT_NAMES entries a pickle holds (at least one; shapes must match)."""
        from ...checkpoint.formats import read_pickle

        data = read_pickle(path)
        found = [n for n in self.INIT_NAMES if isinstance(data, dict) and n in data]
        if not found:
            keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: no {' / '.join(self.INIT_NAMES)} entry (has {keys})")
        for name in found:
            target = getattr(self, name)
            value = torch.as_tensor(data[name]).float()
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{path}: '{name}' has shape {tuple(value.shape)}, the embedder expects "
                                 f"{tuple(target.shape)} (NUM_VERTICES, FEATURE_DIM / EMBED_SIZE)")
            target.copy_(value.to(target.device))


class VertexFeatureEmbedder(_VertexEmbedder):
    """normalize(features @ embeddings): features (V, K) fixed, embeddings (K, D) trained."""

    SPEC_KEYS = ("NUM_VERTICES", "FEATURE_DIM", "FEATURES_TRAINABLE", "IS_TRAINABLE", "INIT_FILE")
    INIT_NAMES = ("features", "embeddings")

    def __init__(self, num_vertices: int, feature_dim: int, embed_dim: int, train_features: bool = False):
        super().__init__()
        features = torch.zeros(num_vertices, feature_dim)
        if train_features:
            self.features = nn.Parameter(features)
        else:  # in the state dict (the checkpoint carries it), not a parameter
            self.register_buffer("features", features)
        self.embeddings = nn.Parameter(torch.zeros(feature_dim, embed_dim))

    @staticmethod
    def _kwargs(spec) -> dict:
        return dict(num_vertices=spec.NUM_VERTICES, feature_dim=spec.FEATURE_DIM,
                    train_features=bool(spec.FEATURES_TRAINABLE))

    def forward(self) -> torch.Tensor:
        return normalize_embeddings(torch.mm(self.features, self.embeddings))


class VertexDirectEmbedder(_VertexEmbedder):
    """normalize(embeddings): a trained (V, D) table."""

    def __init__(self, num_vertices: int, embed_dim: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.zeros(num_vertices, embed_dim))

    @staticmethod
    def _kwargs(spec) -> dict:
        return dict(num_vertices=spec.NUM_VERTICES)

    def forward(self) -> torch.Tensor:
        return normalize_embeddings(self.embeddings)


DENSEPOSE_EMBEDDER_REGISTRY._do_register("vertex_feature", VertexFeatureEmbedder)
DENSEPOSE_EMBEDDER_REGISTRY._do_register("vertex_direct", VertexDirectEmbedder)


class Embedder(nn.Module):
    """The vertex embedders of a CSE model, one submodule `embedder_<mesh name>` per mesh;
    `embedder(mesh_name)` -> (V, D) unit vertex embeddings (what the evaluator and the losses call)."""

    def __init__(self, embedders: Dict[str, nn.Module]):
        super().__init__()
        if not embedders:
            raise ValueError(f"{CSE_KEY}: a CSE model needs at least one mesh embedder")
        self.mesh_names = tuple(embedders)
        for name, embedder in embedders.items():
            self.add_module(f"embedder_{name}", embedder)

    @classmethod
    def from_config(cls, cfg) -> "Embedder":
        cse = cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE
        embedders = {}
        for mesh_name, spec in cse.EMBEDDERS.items():
            if "TYPE" not in spec:
                raise ValueError(f"{CSE_KEY}.{mesh_name}: no TYPE (vertex_feature or vertex_direct)")
            embedder_cls = get_from_registry(DENSEPOSE_EMBEDDER_REGISTRY, spec.TYPE, f"{CSE_KEY}.{mesh_name}.TYPE")
            embedders[mesh_name] = embedder_cls.from_spec(mesh_name, spec, cse.EMBED_SIZE,
                                                          cfg.DATASETS.MESH_DATA_DIR)
        return cls(embedders)

    def has_embeddings(self, mesh_name: str) -> bool:
        return mesh_name in self.mesh_names

    def forward(self, mesh_name: str) -> torch.Tensor:
        if not self.has_embeddings(mesh_name):
            raise KeyError(f"no vertex embedder for mesh '{mesh_name}' (the model has {list(self.mesh_names)})")
        return getattr(self, f"embedder_{mesh_name}")()


def build_densepose_embedder(cfg) -> Optional[Embedder]:
    """The model's Embedder if MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS has entries (as detectron2), else None."""
    if cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS:
        return Embedder.from_config(cfg)
    return None
