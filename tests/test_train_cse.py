"""CSE training (issue 15): DensePoseCseLoss on hand-made inputs (values, zero losses with their graph, config
errors) and the tiny synthetic CSE model whose embedding loss falls from random init. Values against detectron2:
tests/reference/test_reference_cse_losses.py."""
import json
import math
import os

import pytest
import torch

from _train_helpers import REPO, drop_log_handlers, one_thread  # noqa: F401

from densepose_fnl.config import get_cfg
from densepose_fnl.data.meshes import MeshInfo, register_mesh
from densepose_fnl.modeling.densepose.embedder import Embedder, VertexDirectEmbedder
from densepose_fnl.modeling.losses import DensePoseCseLoss, EmbeddingLoss, SoftEmbeddingLoss
from densepose_fnl.modeling.registry import DENSEPOSE_LOSS_REGISTRY
from densepose_fnl.structures import DensePoseEmbeddingPredictorOutput, Instances
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative, DensePoseList

S, D = 4, 3
MESH = "cse_unit_mesh"  # the synthetic body at grid 3: 147 vertices
TINY_CSE_CONFIG = str(REPO / "configs" / "synthetic" / "mobile_parsing_rcnn_tiny_cse_synthetic.yaml")


@pytest.fixture(scope="module")
def num_vertices(tmp_path_factory):
    from densepose_fnl.data.synthetic import synthetic_uv_symmetry_tables
    from densepose_fnl.evaluation.synthetic_mesh import make_synthetic_mesh, mesh_file_names, write_mesh_files

    d = tmp_path_factory.mktemp("cse_mesh")
    mesh = make_synthetic_mesh(grid=3)
    write_mesh_files(mesh, d, MESH, synthetic_uv_symmetry_tables())
    register_mesh(MeshInfo(MESH, **mesh_file_names(MESH), data_dir=str(d)))
    return mesh.num_vertices


def _embedder(v, table=None):
    e = Embedder({MESH: VertexDirectEmbedder(v, D)})
    if table is not None:
        with torch.no_grad():
            e.embedder_cse_unit_mesh.embeddings.copy_(table)
    return e


def _cse_dp(x, y, vertices, segm=None, mesh=MESH):
    return DensePoseDataRelative(torch.tensor(x), torch.tensor(y), segm=segm, vertex_ids=torch.tensor(vertices),
                                 mesh_name=mesh)


def _inst(proposals, gts, dps):
    return Instances((100, 100), proposal_boxes=torch.tensor(proposals, dtype=torch.float32),
                     gt_boxes=torch.tensor(gts, dtype=torch.float32),
                     gt_classes=torch.zeros(len(proposals), dtype=torch.long), gt_densepose=DensePoseList(dps))


def _outputs(n, embedding=None):
    emb = torch.zeros(n, D, S, S) if embedding is None else embedding.clone()
    return DensePoseEmbeddingPredictorOutput(embedding=emb.requires_grad_(True),
                                             coarse_segm=torch.zeros(n, 2, S, S, requires_grad=True))


def _loss(name="EmbeddingLoss", **cse):
    cfg = get_cfg()
    cfg.MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE = S
    cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBED_LOSS_NAME = name
    for k, v in cse.items():
        cfg.MODEL.ROI_DENSEPOSE_HEAD.CSE[k] = v
    return DENSEPOSE_LOSS_REGISTRY.get("DensePoseCseLoss").from_config(cfg)


def test_config_picks_the_embedding_loss_and_its_weights():
    loss = _loss("SoftEmbeddingLoss", EMBEDDING_DIST_GAUSS_SIGMA=0.2, GEODESIC_DIST_GAUSS_SIGMA=0.3,
                 EMBED_LOSS_WEIGHT=0.4)
    assert isinstance(loss.embed_loss, SoftEmbeddingLoss)
    assert (loss.embed_loss.embdist_gauss_sigma, loss.embed_loss.geodist_gauss_sigma) == (0.2, 0.3)
    assert (loss.w_embed, loss.w_segm, loss.heatmap_size) == (0.4, 5.0, S)  # w_segm: INDEX_WEIGHTS, as detectron2
    assert type(_loss().embed_loss) is EmbeddingLoss


@pytest.mark.parametrize("key, value, match", [
    ("CSE.EMBED_LOSS_NAME", "NoSuchLoss", "EMBED_LOSS_NAME 'NoSuchLoss' is unknown"),
    ("CSE.SHAPE_TO_SHAPE_CYCLE_LOSS.ENABLED", True, "SHAPE_TO_SHAPE_CYCLE_LOSS: the CSE cycle losses"),
    ("CSE.PIX_TO_SHAPE_CYCLE_LOSS.ENABLED", True, "PIX_TO_SHAPE_CYCLE_LOSS: the CSE cycle losses"),
    ("COARSE_SEGM_TRAINED_BY_MASKS", True, "COARSE_SEGM_TRAINED_BY_MASKS"),
])
def test_unsupported_settings_are_errors_naming_the_key(key, value, match):
    cfg = get_cfg()
    cfg.merge_from_list([f"MODEL.ROI_DENSEPOSE_HEAD.{key}", value])
    with pytest.raises((NotImplementedError, ValueError), match=match):
        DensePoseCseLoss.from_config(cfg)


def test_loss_without_embedder_is_an_error(num_vertices):
    with pytest.raises(ValueError, match="needs the model's mesh embedder"):
        _loss()([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], [_cse_dp([32.0], [32.0], [1])])], _outputs(1))


@pytest.mark.parametrize("name", ["EmbeddingLoss", "SoftEmbeddingLoss"])
def test_zero_embeddings_score_every_vertex_alike(num_vertices, name):
    # zero table and zero maps: every score is 0, so both losses are the cross-entropy of a uniform
    # distribution, log V, whatever the (soft) target
    dps = [_cse_dp([32.0, 160.0], [32.0, 96.0], [0, 100])]
    losses = _loss(name, EMBED_LOSS_WEIGHT=0.5)([_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], dps)], _outputs(1),
                                                embedder=_embedder(num_vertices))
    assert sorted(losses) == [f"loss_densepose_E{MESH}", "loss_densepose_S"]
    assert losses[f"loss_densepose_E{MESH}"].item() == pytest.approx(0.5 * math.log(num_vertices), rel=1e-6)


def test_hard_loss_by_hand_normalised_pixel_embedding_against_vertex_embeddings(num_vertices):
    # table: vertex 0 -> e0, vertex 1 -> e1, the others zero rows (normalised: stay zero)
    table = torch.zeros(num_vertices, D)
    table[0], table[1] = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    emb = torch.zeros(1, D, S, S)
    emb[0, 0], emb[0, 1] = 3.0, 4.0  # every pixel: (3, 4, 0) -> normalised (0.6, 0.8, 0)
    sigma = 0.5
    losses = _loss(EMBEDDING_DIST_GAUSS_SIGMA=sigma, EMBED_LOSS_WEIGHT=1.0)(
        [_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], [_cse_dp([32.0], [32.0], [1])])], _outputs(1, emb),
        embedder=_embedder(num_vertices, table))
    d0 = (0.6 - 1) ** 2 + 0.8 ** 2  # |p - e0|^2
    d1 = 0.6 ** 2 + (0.8 - 1) ** 2
    dz = 1.0  # |p - 0|^2
    scores = [-d0 / sigma, -d1 / sigma] + [-dz / sigma] * (num_vertices - 2)
    want = -scores[1] + math.log(sum(math.exp(s) for s in scores))
    assert losses[f"loss_densepose_E{MESH}"].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("case", ["no_images", "all_none", "chart_only", "outside"])
def test_no_usable_points_gives_zero_losses_connected_to_outputs_and_embedder(num_vertices, case):
    chart = DensePoseDataRelative(torch.tensor([32.0]), torch.tensor([32.0]), torch.tensor([1]), torch.tensor([0.5]),
                                  torch.tensor([0.5]))
    proposals = {
        "no_images": [],
        "all_none": [_inst([[0, 0, 4, 4]] * 2, [[0, 0, 4, 4]] * 2, [None, None])],
        "chart_only": [_inst([[0, 0, 4, 4]], [[0, 0, 4, 4]], [chart])],  # no vertex ids: nothing for CSE
        "outside": [_inst([[0, 0, 1, 1]], [[0, 0, 4, 4]], [_cse_dp([200.0], [200.0], [3])])],
    }[case]
    out, embedder = _outputs(2), _embedder(num_vertices, torch.randn(num_vertices, D))
    losses = _loss("SoftEmbeddingLoss")(proposals, out, embedder=embedder)
    assert sorted(losses) == [f"loss_densepose_E{MESH}", "loss_densepose_S"]
    total = sum(losses.values())
    assert total.item() == 0.0 and total.requires_grad
    total.backward()
    for t in (out.embedding, out.coarse_segm, embedder.embedder_cse_unit_mesh.embeddings):
        assert t.grad is not None and t.grad.abs().sum() == 0


def test_cse_training_loss_falls_from_random_init(tmp_path):
    from densepose_fnl.config import load_config
    from densepose_fnl.data import ensure_synthetic_dataset
    from densepose_fnl.engine import DefaultTrainer, default_setup

    root = ensure_synthetic_dataset(tmp_path / "synthetic", num_train=8, num_val=3, seed=3, min_size=64, max_size=80,
                                    cse=True)
    old = os.environ.get("DENSEPOSE_SYNTHETIC_ROOT")
    os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = str(root)
    try:
        cfg = load_config(TINY_CSE_CONFIG, ["OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.TEST", "()",
                                            "SOLVER.MAX_ITER", 30, "SOLVER.STEPS", "()"])
        default_setup(cfg)
        trainer = DefaultTrainer(cfg, log_period=1)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        if old is None:
            os.environ.pop("DENSEPOSE_SYNTHETIC_ROOT", None)
        else:
            os.environ["DENSEPOSE_SYNTHETIC_ROOT"] = old
    with open(tmp_path / "out" / "metrics.json") as f:
        rows = [json.loads(line) for line in f]
    assert {k for k in rows[0] if k.startswith("loss_densepose")} == {"loss_densepose_S",
                                                                      "loss_densepose_Esynthetic_body"}
    e = [r["loss_densepose_Esynthetic_body"] for r in rows]
    # iteration 0: the vertex table starts at zeros (as detectron2's), every score is 0: 0.6 * log(726) exactly
    assert e[0] == pytest.approx(0.6 * math.log(726), rel=1e-5)
    # the first step turns the zero rows into unit ones (normalisation of ~0 rows: a huge gradient, clipped), a
    # sharp random assignment (sigma 0.01) with a large loss; from there it falls (measured: ~67 -> ~30)
    early, late = sorted(e[1:6])[2], sorted(e[20:30])[5]
    assert late < 0.7 * early, (early, late, e)
