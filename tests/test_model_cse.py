"""CSE models (issue 15): the mesh vertex embedders (features read from INIT_FILE or carried by checkpoints,
never downloaded), the embedding predictor, and the B-CSE model end to end: inference gives
`pred_densepose.embedding` / `.coarse_segm`, its checkpoint (features buffer included) round-trips strictly,
and the CSE evaluator scores it with the model's own `roi_heads.embedder`."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from densepose_fnl.checkpoint import CheckpointLoadError
from densepose_fnl.config import load_config
from densepose_fnl.modeling import build_model
from densepose_fnl.modeling.densepose import (DensePoseEmbeddingPredictor, Embedder, VertexDirectEmbedder,
                                              VertexFeatureEmbedder, build_densepose_predictor)
from densepose_fnl.modeling.densepose.embedder import normalize_embeddings
from densepose_fnl.structures import DensePoseEmbeddingPredictorOutput

REPO = Path(__file__).resolve().parents[1]
B_CSE = REPO / "configs" / "mobile_parsing_rcnn_b_cse_s3x.yaml"
NO_INIT = ["MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS.smpl_27554.INIT_FILE", ""]
URL = "https://dl.fbaipublicfiles.com/densepose/data/cse/lbo/phi_test_mesh_7_4.pkl"


def b_cse_cfg(*opts):
    return load_config(str(B_CSE), ["MODEL.TIMMNETS.PRETRAINED", False, *NO_INIT, *opts])


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def embedders_cfg(tmp_path, entries: str, mesh_dir: str = ""):
    """A config whose CSE.EMBEDDERS are the YAML `entries` (indented under EMBEDDERS)."""
    path = tmp_path / "embedders.yaml"
    path.write_text(f'DATASETS:\n  MESH_DATA_DIR: "{mesh_dir}"\nMODEL:\n  ROI_DENSEPOSE_HEAD:\n    CSE:\n'
                    f'      EMBED_SIZE: 4\n      EMBEDDERS:\n{entries}')
    return load_config(str(path))


def feature_entry(name="test_mesh", init_file="", vertices=7, trainable=True, features_trainable=False, extra=""):
    return (f"        {name}:\n          TYPE: vertex_feature\n          NUM_VERTICES: {vertices}\n"
            f"          FEATURE_DIM: 5\n          FEATURES_TRAINABLE: {features_trainable}\n"
            f"          IS_TRAINABLE: {trainable}\n          INIT_FILE: \"{init_file}\"\n{extra}")


def write_pickle(path, **arrays):
    with open(path, "wb") as f:
        pickle.dump(arrays, f)
    return str(path)


def test_normalize_embeddings_unit_rows_and_zero_rows_stay_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-8, 0.0]])
    out = normalize_embeddings(x)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], torch.zeros(2)) and not out.isnan().any()
    torch.testing.assert_close(out[2], torch.tensor([1e-2, 0.0]))  # norms below 1e-6 count as 1e-6


def test_vertex_feature_embedder_from_a_local_init_file(tmp_path):
    rng = np.random.default_rng(0)
    features, embeddings = rng.normal(size=(7, 5)), rng.normal(size=(5, 4))
    path = write_pickle(tmp_path / "phi.pkl", features=features, embeddings=embeddings)
    embedder = Embedder.from_config(embedders_cfg(tmp_path, feature_entry(init_file=path)))
    e = embedder.embedder_test_mesh
    assert isinstance(e, VertexFeatureEmbedder) and embedder.mesh_names == ("test_mesh",)
    # the features are a buffer (state dict, not parameters), the projection is trained
    assert [n for n, _ in embedder.named_parameters()] == ["embedder_test_mesh.embeddings"]
    assert [n for n, _ in embedder.named_buffers()] == ["embedder_test_mesh.features"]
    assert e.embeddings.requires_grad
    want = torch.tensor(features @ embeddings, dtype=torch.float32)
    want = want / want.norm(dim=1, keepdim=True)
    torch.testing.assert_close(embedder("test_mesh"), want)
    torch.testing.assert_close(embedder("test_mesh").norm(dim=1), torch.ones(7))


def test_init_file_url_is_read_from_the_mesh_data_dir_never_downloaded(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(7, 5))
    write_pickle(tmp_path / "phi_test_mesh_7_4.pkl", features=features)  # no "embeddings": they stay zero
    embedder = Embedder.from_config(embedders_cfg(tmp_path, feature_entry(init_file=URL), mesh_dir=str(tmp_path)))
    torch.testing.assert_close(embedder.embedder_test_mesh.features, torch.tensor(features, dtype=torch.float32))
    assert torch.equal(embedder.embedder_test_mesh.embeddings, torch.zeros(5, 4))
    # elsewhere: one line naming the local file, the URL and the config key
    with pytest.raises(FileNotFoundError) as e:
        Embedder.from_config(embedders_cfg(tmp_path, feature_entry(init_file=URL), mesh_dir=str(tmp_path / "no")))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "no" / "phi_test_mesh_7_4.pkl") in msg and URL in msg
    assert "MODEL.ROI_DENSEPOSE_HEAD.CSE.EMBEDDERS.test_mesh.INIT_FILE" in msg and "never downloaded" in msg


def test_empty_init_file_gives_zeros_of_the_right_shape(tmp_path):
    embedder = Embedder.from_config(embedders_cfg(tmp_path, feature_entry(vertices=9)))
    e = embedder.embedder_test_mesh
    assert e.features.shape == (9, 5) and e.embeddings.shape == (5, 4)
    assert not e.features.any() and not e.embeddings.any()
    assert torch.equal(embedder("test_mesh"), torch.zeros(9, 4))  # no NaN from the zero rows


def test_trainable_switches(tmp_path):
    cfg = embedders_cfg(tmp_path, feature_entry(trainable=False, features_trainable=True))
    e = Embedder.from_config(cfg).embedder_test_mesh
    assert isinstance(e.features, torch.nn.Parameter)  # FEATURES_TRAINABLE: a parameter, same state-dict name
    assert not e.features.requires_grad and not e.embeddings.requires_grad  # IS_TRAINABLE False freezes it


def test_vertex_direct_embedder(tmp_path):
    table = np.random.default_rng(2).normal(size=(6, 4))
    path = write_pickle(tmp_path / "direct.pkl", embeddings=table)
    entry = (f"        direct_mesh:\n          TYPE: vertex_direct\n          NUM_VERTICES: 6\n"
             f"          IS_TRAINABLE: True\n          INIT_FILE: \"{path}\"\n")
    embedder = Embedder.from_config(embedders_cfg(tmp_path, entry + feature_entry()))
    assert embedder.mesh_names == ("direct_mesh", "test_mesh")
    assert isinstance(embedder.embedder_direct_mesh, VertexDirectEmbedder)
    t = torch.tensor(table, dtype=torch.float32)
    torch.testing.assert_close(embedder("direct_mesh"), t / t.norm(dim=1, keepdim=True))
    assert [n for n, _ in embedder.embedder_direct_mesh.named_parameters()] == ["embeddings"]


def test_embedder_errors_name_what_is_wrong(tmp_path):
    def build(entries, **kw):
        return Embedder.from_config(embedders_cfg(tmp_path, entries, **kw))

    with pytest.raises(FileNotFoundError, match=r"test_mesh\.INIT_FILE: vertex features file not found: .*nope\.pkl"):
        build(feature_entry(init_file=str(tmp_path / "nope.pkl")))
    bad = write_pickle(tmp_path / "bad.pkl", features=np.zeros((7, 6)))
    with pytest.raises(ValueError, match=r"'features' has shape \(7, 6\), the embedder expects \(7, 5\)"):
        build(feature_entry(init_file=bad))
    empty = write_pickle(tmp_path / "empty.pkl", other=np.zeros(3))
    with pytest.raises(ValueError, match=r"no features / embeddings entry \(has \['other'\]\)"):
        build(feature_entry(init_file=empty))
    unsafe = tmp_path / "unsafe.pkl"
    unsafe.write_bytes(pickle.dumps({"features": __import__("collections").Counter()}))
    with pytest.raises(CheckpointLoadError, match="refused global 'collections.Counter'"):
        build(feature_entry(init_file=str(unsafe)))
    with pytest.raises(KeyError, match=r"test_mesh\.TYPE = 'vertex_magic'.*vertex_direct, vertex_feature"):
        build(feature_entry().replace("vertex_feature", "vertex_magic"))
    with pytest.raises(ValueError, match=r"test_mesh \(TYPE vertex_feature\): unknown keys \['FEATURE_DIMS'\]"):
        build(feature_entry(extra="          FEATURE_DIMS: 3\n"))
    with pytest.raises(ValueError, match=r"missing \['FEATURE_DIM'\]"):
        build(feature_entry().replace("          FEATURE_DIM: 5\n", ""))
    with pytest.raises(KeyError, match=r"no vertex embedder for mesh 'smpl_27554' \(the model has \['test_mesh'\]\)"):
        build(feature_entry())("smpl_27554")


@pytest.mark.parametrize("up_scale", [1, 2])
def test_embedding_predictor_upsamples_bilinearly_as_detectron2(up_scale):
    cfg = b_cse_cfg("MODEL.ROI_DENSEPOSE_HEAD.UP_SCALE", up_scale)
    predictor = build_densepose_predictor(cfg, 64)
    assert isinstance(predictor, DensePoseEmbeddingPredictor)
    assert [n for n, _ in predictor.named_parameters()] == [
        "coarse_segm_lowres.weight", "coarse_segm_lowres.bias", "embed_lowres.weight", "embed_lowres.bias"]
    for p in predictor.parameters():  # nonzero biases: the check below sees them
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 64, 32, 32)
    out = predictor(x)
    assert isinstance(out, DensePoseEmbeddingPredictorOutput) and len(out) == 3
    assert out.embedding.shape == (3, 16, 64 * up_scale, 64 * up_scale) and out.coarse_segm.shape[1] == 2
    for field, conv in (("embedding", predictor.embed_lowres), ("coarse_segm", predictor.coarse_segm_lowres)):
        want = F.interpolate(conv(x), scale_factor=up_scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(getattr(out, field), want, atol=0, rtol=0)
    assert predictor.output_names == ("embedding", "coarse_segm")
    torch.testing.assert_close(out[1:2].embedding, out.embedding[1:2])  # per-RoI indexing (Instances)


def test_embedding_predictor_rejects_confidences_and_needs_embedders():
    cfg = b_cse_cfg("MODEL.ROI_DENSEPOSE_HEAD.SEGM_CONFIDENCE.ENABLED", True)
    with pytest.raises(ValueError, match="'DensePoseEmbeddingPredictor' has no confidence layers"):
        build_densepose_predictor(cfg, 64)
    cfg = load_config(str(REPO / "configs" / "mobile_parsing_rcnn_b.yaml"),
                      ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME",
                       "DensePoseEmbeddingPredictor"])
    with pytest.raises(ValueError, match="CSE.EMBEDDERS must give the mesh embedder"):
        build_model(cfg)


def test_repo_b_cse_config_equals_the_authors(shared_dir):
    ours = dict(_leaves(load_config(str(B_CSE))))
    theirs = dict(_leaves(load_config(str(shared_dir / "reference" / "authors_configs" /
                                          "mobile_parsing_rcnn_b_cse_s3x.yaml"))))
    differ = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    # their MyDensePoseROIHeads is registered as our DensePoseROIHeads; our eager inference layout (no model change)
    assert differ == {"MODEL.ROI_HEADS.NAME", "TEST.CHANNELS_LAST"}


# ----------------------------------------------------------------------------- the model, end to end
MESH = "test_model_cse_body"


@pytest.fixture(scope="module")
def model_and_scene(tmp_path_factory):
    """B-CSE plus an embedder for a small synthetic mesh (with its geodesics, for the evaluator), random
    features / projections, BN calibrated so that there are detections; a scene with one annotated person."""
    from densepose_fnl.data.meshes import MeshCatalog, MeshInfo
    from densepose_fnl.data.synthetic import render_synthetic_image
    from densepose_fnl.evaluation.synthetic_mesh import make_synthetic_mesh, mesh_file_names, write_mesh_files
    from densepose_fnl.utils.bn_calibration import calibrate_batchnorm

    d = tmp_path_factory.mktemp("cse_model")
    body = make_synthetic_mesh(grid=3)
    write_mesh_files(body, d, MESH)
    MeshCatalog[MESH] = MeshInfo(MESH, **mesh_file_names(MESH), data_dir=str(d))
    rng = np.random.default_rng(0)
    phi = write_pickle(d / "phi_body.pkl", features=rng.normal(size=(body.num_vertices, 8)),
                       embeddings=rng.normal(size=(8, 16)))
    (d / "cfg.yaml").write_text(
        f'_BASE_: "{B_CSE}"\nMODEL:\n  ROI_DENSEPOSE_HEAD:\n    CSE:\n      EMBEDDERS:\n'
        f'        {MESH}:\n          TYPE: vertex_feature\n          NUM_VERTICES: {body.num_vertices}\n'
        f'          FEATURE_DIM: 8\n          FEATURES_TRAINABLE: False\n          IS_TRAINABLE: True\n'
        f'          INIT_FILE: "{phi}"\n')
    opts = ["MODEL.TIMMNETS.PRETRAINED", False, *NO_INIT, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
            "TEST.DETECTIONS_PER_IMAGE", 3, "INPUT.MIN_SIZE_TEST", 0]
    cfg = load_config(str(d / "cfg.yaml"), opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.roi_heads.embedder.embedder_smpl_27554.features.normal_()
        model.roi_heads.embedder.embedder_smpl_27554.embeddings.normal_()
    image, _, _ = render_synthetic_image(np.random.default_rng(5), min_size=96, max_size=128)  # BGR uint8
    inputs = [{"image": torch.as_tensor(image[:, :, ::-1].transpose(2, 0, 1).copy()), "image_id": 1,
               "height": image.shape[0], "width": image.shape[1]}]
    calibrate_batchnorm(model, lambda: (model(b) for b in [inputs]))
    return cfg, model, inputs, image, body, d


def test_b_cse_inference_outputs_embeddings_per_person(model_and_scene):
    from densepose_fnl.analysis.model_stats import count_parameters, parameters_by_block

    cfg, model, inputs, _, body, _ = model_and_scene
    blocks = parameters_by_block(model)
    assert sum(blocks.values()) == count_parameters(model)
    assert blocks["embedder"] == 256 * 16 + 8 * 16 and blocks["densepose_predictor"] == 18_450
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    assert len(inst) == 3
    dp = inst.pred_densepose
    assert isinstance(dp, DensePoseEmbeddingPredictorOutput)
    assert dp.embedding.shape == (3, 16, 64, 64) and dp.coarse_segm.shape == (3, 2, 64, 64)
    assert dp.embedding.abs().sum() > 0
    assert model.roi_heads.embedder(MESH).shape == (body.num_vertices, 16)


def test_b_cse_checkpoint_round_trip_is_strict_and_carries_the_features(model_and_scene, tmp_path):
    from densepose_fnl.checkpoint import CheckpointMismatchError
    from densepose_fnl.engine import DefaultPredictor

    cfg, model, inputs, image, _, _ = model_and_scene
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    c = cfg.clone()
    c.defrost()
    c.MODEL.WEIGHTS = str(path)
    predictor = DefaultPredictor(c)  # INIT_FILE '' for smpl: its features come from the checkpoint
    torch.testing.assert_close(predictor.model.roi_heads.embedder("smpl_27554"),
                               model.roi_heads.embedder("smpl_27554"), atol=0, rtol=0)
    with torch.no_grad():
        want = model(inputs)[0]["instances"]
        got = predictor(image)["instances"]
    torch.testing.assert_close(got.pred_boxes, want.pred_boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pred_densepose.embedding, want.pred_densepose.embedding, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pred_densepose.coarse_segm, want.pred_densepose.coarse_segm, atol=1e-5, rtol=0)
    # a checkpoint without the features buffer is refused, naming it
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("embedder_smpl_27554.features")}
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError, match="roi_heads.embedder.embedder_smpl_27554.features"):
        DefaultPredictor(c)


def test_b_cse_is_evaluated_with_its_own_embedder(model_and_scene):
    from densepose_fnl.evaluation.evaluator import DensePoseCOCOEvaluator, inference_on_dataset
    from densepose_fnl.evaluation.synthetic_mesh import coco_dataset, densepose_annotation

    cfg, model, inputs, image, body, _ = model_and_scene
    h, w = image.shape[:2]
    rng = np.random.RandomState(0)
    n = 40
    pts = np.stack([rng.uniform(0, 255, n), rng.uniform(0, 255, n), rng.randint(1, 25, n).astype(float),
                    rng.uniform(0, 1, n), rng.uniform(0, 1, n)], 1)
    ann = densepose_annotation(1, 1, [w * 0.1, h * 0.1, w * 0.6, h * 0.8], pts)
    ann["dp_vertex"] = body.nearest_vertices(ann["dp_I"], ann["dp_U"], ann["dp_V"]).tolist()
    ann["ref_model"] = MESH
    gt = coco_dataset([{"id": 1, "width": w, "height": h, "file_name": "1.png"}], [ann])
    ev = DensePoseCOCOEvaluator(gt, evaluator_type="cse")
    results = inference_on_dataset(model, [inputs], ev)
    assert ev.embedder is model.roi_heads.embedder
    assert len(ev._predictions) == 3
    # the GT's mesh was embedded by the model's embedder; detections overlapping the GT have its vertices
    torch.testing.assert_close(ev.vertex_embeddings(MESH), model.roi_heads.embedder(MESH), atol=0, rtol=0)
    matched = [p["cse_vertices"][1] for p in ev._predictions if 1 in p["cse_vertices"]]
    assert matched
    for verts in matched:
        assert verts.shape == (n,) and verts.min() >= -1 and verts.max() < body.num_vertices
    assert any((verts >= 0).any() for verts in matched)
    assert {"densepose_gps", "densepose_gpsm", "densepose_segm"} <= set(results)
    assert 0 <= results["densepose_gps"]["AP"] <= 100


def test_cse_tensor_model_outputs_embeddings_and_dump_needs_the_converter(model_and_scene):
    from densepose_fnl.export.tensor_model import EMBEDDING_OUTPUT_NAMES, DensePoseTensorModel
    from densepose_fnl.postprocess.dump import extract_results

    _, model, inputs, _, _, _ = model_and_scene
    wrapper = DensePoseTensorModel(model)  # the export's tensor-only model (ONNX round trips: test_export_cse.py)
    assert wrapper.output_names == EMBEDDING_OUTPUT_NAMES
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
        boxes, scores, classes, embedding, coarse_segm = wrapper(inputs[0]["image"][None])
    torch.testing.assert_close(boxes, inst.pred_boxes, atol=1e-4, rtol=0)  # INPUT.MIN_SIZE_TEST 0: no resize
    torch.testing.assert_close(embedding, inst.pred_densepose.embedding, atol=1e-5, rtol=0)
    torch.testing.assert_close(coarse_segm, inst.pred_densepose.coarse_segm, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="CseResultsConverter"):  # CSE results need the vertex embeddings
        extract_results(inst, None)


def test_b_cse_per_person_vertex_maps_use_the_models_embedder(model_and_scene):
    from densepose_fnl.postprocess import CseResultsConverter, closest_vertices, extract_results, predictor_vertex_embeddings
    from densepose_fnl.postprocess.charts import int_box_xywh

    _, model, inputs, _, body, _ = model_and_scene
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    conv = CseResultsConverter(vertex_embeddings=predictor_vertex_embeddings(model), class_to_mesh_name={0: MESH},
                               charts="none")
    boxes, _, results = extract_results(inst, None, conv)
    assert len(results) == len(inst) == 3
    for k, r in enumerate(results):
        _, _, w, h = int_box_xywh(boxes[k])
        want = closest_vertices(inst.pred_densepose.embedding[k], inst.pred_densepose.coarse_segm[k], (0, 0, w, h),
                                model.roi_heads.embedder(MESH))
        assert r.mesh_name == MESH and torch.equal(r.vertices, want) and r.labels is None
        assert r.vertices.max() < body.num_vertices
    assert any((r.vertices >= 0).any() for r in results)
