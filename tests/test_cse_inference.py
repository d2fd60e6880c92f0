"""CSE inference results (issue 15 item 4): per-person vertex maps from embeddings, vertex -> chart (I, U, V)
through the official SMPL subdivision files (synthetic files in exactly their format), the dump format,
IUV images, the dp_vertex / dp_cse_texture visualizers (pixel values), and apply_net dump / show on a CSE
predictor."""
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.data.meshes import MeshCatalog, MeshInfo, set_mesh_data_dir
from densepose_fnl.evaluation.eval_data import GeodesicEvalData
from densepose_fnl.evaluation.synthetic_mesh import make_synthetic_mesh, mesh_file_names, write_eval_data, write_mesh_files
from densepose_fnl.postprocess import CseResultsConverter, VertexChartMap, closest_vertices, extract_results
from densepose_fnl.postprocess.cse import ChartFileMissingError
from densepose_fnl.postprocess.dump import dump_entry, load_dump, save_dump
from densepose_fnl.postprocess.iuv import compose_iuv_image
from densepose_fnl.structures import DensePoseEmbeddingPredictorOutput, DensePoseEmbeddingResult, Instances
from densepose_fnl.vis import CseTextureVisualizer, VertexVisualizer, build_visualizer, vertex_values

ROOT = Path(__file__).resolve().parents[1]
BODY = "test_cse_inference_body"  # a non-SMPL mesh name: its files through the catalog, no charts
D = 8


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The synthetic body (grid 3: 147 vertices) as CSE mesh files and as SMPL eval-data files."""
    d = tmp_path_factory.mktemp("cse_infer")
    body = make_synthetic_mesh(grid=3)
    write_mesh_files(body, d / "meshes", BODY)
    MeshCatalog[BODY] = MeshInfo(BODY, **mesh_file_names(BODY), data_dir=str(d / "meshes"))
    write_eval_data(body, d / "eval")
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(body.num_vertices, D, generator=g)
    emb = emb / emb.norm(dim=1, keepdim=True)
    return body, d, emb


def person_output(emb, targets, fg):
    """Embedding maps equal to the vertex embeddings of `targets` (K, H, W) where fg, as the predictor's output
    of K boxes of exactly H x W pixels (so the bilinear resize is the identity)."""
    e = emb[targets.clamp(min=0)].permute(0, 3, 1, 2).contiguous()
    segm = torch.stack([torch.zeros(fg.shape), fg.float() * 2 - 1], dim=1)
    return DensePoseEmbeddingPredictorOutput(embedding=e, coarse_segm=segm)


def two_people(body, emb, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = 12, 20
    targets = torch.randint(0, body.num_vertices, (2, h, w), generator=g)
    fg = torch.zeros(2, h, w, dtype=torch.bool)
    fg[:, 2:10, 3:17] = True
    fg[1, :, :5] = False
    boxes = torch.tensor([[4.0, 6.0, 4.0 + w, 6.0 + h], [30.0, 2.0, 30.0 + w, 2.0 + h]])
    return boxes, targets, fg, person_output(emb, targets, fg)


# ---------------------------------------------------------------------------------------------- charts
def test_vertex_chart_map_from_the_official_files_round_trips(scene):
    body, d, _ = scene
    chart = VertexChartMap.from_eval_data(d / "eval")
    assert chart.num_vertices == body.num_vertices
    v = torch.arange(body.num_vertices)
    labels, uv = chart(v[None])
    # every vertex's chart point is matched back to it by the official findAllClosestVerts (our eval data)
    _, back = GeodesicEvalData(d / "eval").closest_vertices(labels[0].numpy(), uv[0, 0].numpy(), uv[1, 0].numpy())
    np.testing.assert_array_equal(back - 1, v.numpy())
    # interior point exactly; a seam vertex takes its first chart in file order (the lower part, u = 1)
    labels, uv = chart(torch.tensor([[body.vertex_of(5, 0.5, 1.0), body.vertex_of(6, 0.0, 0.5), -1]]))
    assert labels.tolist() == [[5, 5, 0]]
    torch.testing.assert_close(uv[:, 0], torch.tensor([[0.5, 1.0, 0.0], [1.0, 0.5, 0.0]]))


def test_missing_chart_file_is_one_line_naming_it(tmp_path, scene):
    with pytest.raises(ChartFileMissingError) as e:
        VertexChartMap.from_eval_data(tmp_path)
    assert str(tmp_path / "SMPL_subdiv.mat") in str(e.value) and "\n" not in str(e.value)
    body, d, emb = scene
    boxes, _, _, out = two_people(body, emb)
    conv = CseResultsConverter(vertex_embeddings=lambda m: emb, class_to_mesh_name={0: "smpl_27554"},
                               charts="required", eval_data_dir=tmp_path)
    with pytest.raises(ChartFileMissingError, match="SMPL_subdiv.mat"):
        conv.check_charts()
    # "auto": no chart, vertices still there
    auto = CseResultsConverter(vertex_embeddings=lambda m: emb, class_to_mesh_name={0: "smpl_27554"},
                               charts="auto", eval_data_dir=tmp_path)
    r = auto(boxes, out)[0]
    assert not r.has_charts and r.vertices.shape == (12, 20)
    with pytest.raises(ValueError, match=f"mesh '{BODY}' has no DensePose chart"):
        CseResultsConverter(vertex_embeddings=lambda m: emb, class_to_mesh_name={0: BODY}, charts="required").check_charts()


# ---------------------------------------------------------------------------------------------- results
def test_converter_gives_the_vertices_and_their_charts(scene):
    body, d, emb = scene
    boxes, targets, fg, out = two_people(body, emb)
    calls = []
    conv = CseResultsConverter(vertex_embeddings=lambda m: calls.append(m) or emb, class_to_mesh_name={0: "smpl_27554"},
                               charts="required", eval_data_dir=d / "eval", chunk_size=7)
    results = conv(boxes, out)
    chart = VertexChartMap.from_eval_data(d / "eval")
    for k, r in enumerate(results):
        assert isinstance(r, DensePoseEmbeddingResult) and r.mesh_name == "smpl_27554"
        want = torch.where(fg[k], targets[k], torch.full_like(targets[k], -1))
        assert torch.equal(r.vertices, want)
        labels, uv = chart(want)
        assert torch.equal(r.labels, labels) and torch.equal(r.uv, uv)
        assert (r.labels[fg[k]] > 0).all() and (r.labels[~fg[k]] == 0).all()
        assert torch.equal(r.embedding, out.embedding[k])
    assert calls == ["smpl_27554"]  # embedded once per mesh
    # a box of another size: the same as closest_vertices on the resized maps (one implementation)
    big = torch.tensor([[0.0, 0.0, 33.7, 25.2]])
    r = conv(big, out[0:1])[0]
    assert r.vertices.shape == (25, 33)
    assert torch.equal(r.vertices, closest_vertices(out.embedding[0], out.coarse_segm[0], (0, 0, 33, 25), emb))


def _smooth_vertex_field(num_vertices, size, noise, seed=0):
    """Vertex embeddings on a smooth 2-D surface in 16-D (a trained CSE's vertices vary smoothly over the
    mesh) and an S x S head map of points on it (+ noise off it), as a model that learned the surface."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(2, 16, generator=g) * 3, torch.rand(16, generator=g) * 6.28
    verts = torch.cos(torch.rand(num_vertices, 2, generator=g) @ w + b)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    field = torch.cos(torch.stack([yy, xx], -1).reshape(-1, 2) @ w + b) + noise * torch.randn(size * size, 16, generator=g)
    return verts, field.t().reshape(16, size, size)


@pytest.mark.parametrize("case,path", [("surface", "tree"), ("near the surface", "tree"), ("surface", "tiles"),
                                       ("near the surface", "tiles"), ("far from all vertices", "dense")])
def test_box_matching_is_the_exact_nearest_vertex(case, path, monkeypatch):
    """Every pixel of a box: the search `closest_vertices` picks (a KD-tree for vertices on a low-dimensional
    surface; tiles + triangle inequality when told not to use one; the dense search where pruning cannot pay:
    embeddings far from all vertices) gives the nearest vertex a float64 brute force gives, except where two
    vertices are within float32 rounding of a tie."""
    import densepose_fnl.postprocess.vertex_search as vs

    if case == "far from all vertices":
        g = torch.Generator().manual_seed(3)
        verts, field = torch.randn(4000, 16, generator=g), torch.randn(16, 64, 64, generator=g)
    else:
        verts, field = _smooth_vertex_field(4000, 64, 0.0 if case == "surface" else 0.1)
    calls = {"dense": [], "tiles": 0, "tree": 0}
    dense, tiles, tree = vs._nearest_dense, vs._nearest_in_tiles, vs.VertexIndex.nearest_by_tree
    monkeypatch.setattr(vs, "_nearest_dense", lambda *a: calls["dense"].append(len(a[0])) or dense(*a))
    monkeypatch.setattr(vs, "_nearest_in_tiles", lambda *a: calls.__setitem__("tiles", calls["tiles"] + 1) or tiles(*a))
    monkeypatch.setattr(vs.VertexIndex, "nearest_by_tree",
                        lambda self, p: calls.__setitem__("tree", calls["tree"] + 1) or tree(self, p))
    if path == "tiles":
        monkeypatch.setattr(vs, "TREE_MAX_DIMENSION", -1.0)
    index = vs.VertexIndex(verts)
    assert (index.dimension < 3) == (case != "far from all vertices"), index.dimension  # two-NN: the surface is 2-D
    h, w = 130, 70
    segm = torch.zeros(2, 64, 64)
    segm[1, 4:60, 10:54] = 1.0  # body inside the box; background around it
    out = closest_vertices(field, segm, (0, 0, w, h), index)
    assert torch.equal(out, closest_vertices(field, segm, (0, 0, w, h), verts))  # tensor in: the same search
    emb = torch.nn.functional.interpolate(field[None], (h, w), mode="bilinear", align_corners=False)[0]
    fg = torch.nn.functional.interpolate(segm[None], (h, w), mode="bilinear", align_corners=False)[0].argmax(0) > 0
    assert fg.sum() > 4000 and (~fg).sum() > 1000
    assert (out[~fg] == -1).all() and (out[fg] >= 0).all()
    px = emb.permute(1, 2, 0)[fg].double()
    d = torch.cdist(px, verts.double())
    exact = d.argmin(1)
    got = out[fg]
    gap = d.gather(1, got[:, None])[:, 0] - d.gather(1, exact[:, None])[:, 0]
    assert (gap[got != exact] < 1e-4).all(), gap.max()  # only near-ties differ (float32 rounding)
    assert (got == exact).float().mean() > 0.998
    # the evaluator's arithmetic (detectron2's distance matrix) agrees as closely
    d2 = vs._nearest(px.float(), verts, 256)
    assert (got == d2).float().mean() > 0.998
    if path == "dense":
        assert sum(calls["dense"]) == 2 * int(fg.sum()) and calls["tree"] == 0  # pruning kept most vertices
    elif path == "tiles":
        assert calls["dense"] == [] and calls["tiles"] > 0 and calls["tree"] == 0  # pruned all the way
    else:
        assert calls["dense"] == [] and calls["tiles"] == 0 and calls["tree"] == 2


def test_dense_search_shares_its_chunks_over_threads_with_the_same_result():
    from densepose_fnl.layers import eager_threads
    from densepose_fnl.postprocess import vertex_search as vs

    g = torch.Generator().manual_seed(6)
    verts, pixels = torch.randn(3000, 16, generator=g), torch.randn(700, 16, generator=g)
    verts[1500] = verts[7]  # a tie: the lowest index wins on every path
    pixels[5] = verts[7]
    norms = verts.square().sum(1)
    want = torch.cdist(pixels.double(), verts.double()).argmin(1)
    threads, pool = torch.get_num_threads(), eager_threads._pool
    results = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            eager_threads._pool = None
            results[n] = vs._nearest_dense(pixels, verts, norms, chunk=64)
            assert (eager_threads._pool is not None) == (n == 2)  # 2 threads: the chunks went to the pool
    finally:
        torch.set_num_threads(threads)
        eager_threads._pool = pool
    assert torch.equal(results[1], results[2])
    assert results[1][5] == 7 and (results[1] == want).float().mean() > 0.999


def test_vertex_index_dimension_and_ties():
    """The two-NN dimension: ~2 for vertices on a surface, ~D for random ones, inf for coincident ones (a
    random-init embedder with zero features: no tree, whose tie-breaking would not be the dense argmin's)."""
    from densepose_fnl.postprocess.vertex_search import VertexIndex, intrinsic_dimension

    verts, field = _smooth_vertex_field(3000, 8, 0.0)
    assert 1.5 < intrinsic_dimension(verts) < 2.5
    # the tree is taken for pixels near that surface, not for pixels far off it (a tree visits most leaves)
    surface = VertexIndex(verts)
    on = field.reshape(16, -1).t()
    assert surface.uses_tree and surface.tree_pays(on)
    assert not surface.tree_pays(on + torch.randn(on.shape, generator=torch.Generator().manual_seed(2)))
    assert intrinsic_dimension(torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))) > 8
    same = torch.full((3000, 16), 0.25)
    index = VertexIndex(same)
    assert index.dimension == float("inf") and not index.uses_tree
    field = torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(1))
    segm = torch.ones(2, 8, 8)
    segm[0] = 0
    out = closest_vertices(field, segm, (0, 0, 40, 60), index)  # 2400 px: the tiles' path, ties -> vertex 0
    assert out.shape == (60, 40) and (out == 0).all()


def test_extract_results_filters_before_matching_and_maps_classes(scene):
    body, d, emb = scene
    boxes, targets, fg, out = two_people(body, emb)
    inst = Instances((40, 60), pred_boxes=boxes, scores=torch.tensor([0.9, 0.3]),
                     pred_classes=torch.tensor([0, 1]), pred_densepose=out)
    seen = []
    conv = CseResultsConverter(vertex_embeddings=lambda m: seen.append(m) or emb,
                               class_to_mesh_name={0: "smpl_27554", 1: BODY}, charts="auto", eval_data_dir=d / "eval")
    b, s, results = extract_results(inst, 0.5, conv)
    assert len(results) == 1 and seen == ["smpl_27554"] and torch.equal(b, boxes[:1])
    b, s, results = extract_results(inst, None, conv)
    assert [r.mesh_name for r in results] == ["smpl_27554", BODY]
    assert results[0].has_charts and not results[1].has_charts  # only SMPL has charts
    with pytest.raises(ValueError, match="CseResultsConverter"):
        extract_results(inst, None)


def test_dump_entry_round_trip_and_iuv_image(scene, tmp_path):
    body, d, emb = scene
    boxes, targets, fg, out = two_people(body, emb)
    conv = CseResultsConverter(vertex_embeddings=lambda m: emb, class_to_mesh_name={0: "smpl_27554"},
                               charts="required", eval_data_dir=d / "eval")
    results = conv(boxes, out)
    scores = torch.tensor([0.9, 0.8])
    save_dump([dump_entry("a.png", (40, 60), boxes, scores, results)], str(tmp_path / "r.pkl"))
    entry = load_dump(str(tmp_path / "r.pkl"))[0]
    for r, p in zip(results, entry["pred_densepose"]):
        assert set(p) == {"mesh_name", "vertices", "embedding", "coarse_segm", "labels", "uv"}
        assert p["mesh_name"] == "smpl_27554" and p["vertices"].dtype == torch.int32
        assert torch.equal(p["vertices"].long(), r.vertices) and torch.equal(p["labels"].long(), r.labels)
        assert p["embedding"].shape == (D, 12, 20) and p["coarse_segm"].shape == (2, 12, 20)
    iuv, inds = compose_iuv_image(boxes, scores, results, (40, 60), score_threshold=0)
    y, x = 6 + 5, 4 + 8  # person 0, box pixel (5, 8)
    v = int(targets[0, 5, 8])
    chart = VertexChartMap.from_eval_data(d / "eval")
    assert iuv[y, x, 0] == chart.parts[v]
    assert iuv[y, x, 1] == int(255 * float(chart.uv[v, 0])) and iuv[y, x, 2] == int(255 * float(chart.uv[v, 1]))
    assert iuv[6, 4].tolist() == [0, 0, 0]  # box pixel (0, 0) is background
    no_chart = [DensePoseEmbeddingResult(vertices=r.vertices, mesh_name=BODY) for r in results]
    with pytest.raises(ValueError, match="IUV images need chart results"):
        compose_iuv_image(boxes, scores, no_chart, (40, 60))
    with pytest.raises(ValueError, match="chart visualizers need chart results"):
        build_visualizer("dp_segm").visualize(np.zeros((40, 60, 3), np.uint8), boxes, no_chart)


# ---------------------------------------------------------------------------------------------- visualizers
def expected_blend(base, color, alpha):
    return np.clip(np.rint(base * (1 - alpha) + np.asarray(color, np.float32) * alpha), 0, 255).astype(np.uint8)


def test_dp_vertex_colours_each_pixel_by_its_vertex(scene):
    body, d, emb = scene
    boxes, targets, fg, out = two_people(body, emb)
    results = [DensePoseEmbeddingResult(vertices=torch.where(fg[k], targets[k], -1), mesh_name=BODY) for k in range(2)]
    table = np.linspace(0, 1, body.num_vertices, dtype=np.float32)
    image = np.full((40, 60, 3), 100, np.uint8)
    pic = VertexVisualizer(values=lambda m: table).visualize(image, boxes, results)
    assert build_visualizer("dp_vertex").needs_charts is False and build_visualizer("bbox,dp_u").needs_charts
    for (py, px) in [(5, 8), (3, 4), (9, 16)]:
        v = int(targets[0, py, px])
        jet = cv2.applyColorMap(np.uint8([[np.clip(table[v] * 255.0, 0, 255)]]), cv2.COLORMAP_JET)[0, 0]
        assert pic[6 + py, 4 + px].tolist() == expected_blend(np.float32(100), jet, np.float32(0.7)).tolist()
    assert (pic[6 + 0, 4 + 0] == 100).all() and (pic[2 + 5, 30 + 2] == 100).all()  # background, masked column
    assert (pic[30:] == 100).all()  # outside every box
    # the default values: detectron2's get_xyz_vertex_embedding for a non-SMPL mesh (from its .pkl)
    with open(d / "meshes" / f"{BODY}.pkl", "rb") as f:
        s = pickle.load(f)["vertices"].astype(np.float64).sum(1)
    np.testing.assert_allclose(vertex_values(BODY), ((s - s.min()) / (s.max() - s.min())) ** 2, rtol=1e-5, atol=1e-6)


def test_dp_vertex_smpl_values_from_the_mds_file(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 6))
    pair = np.empty(2, dtype=object)  # detectron2's file: np.save of (coordinates, _), an object array
    pair[0], pair[1] = coords, rng.normal(size=6)
    np.save(tmp_path / "mds_d=256.npy", pair, allow_pickle=True)
    set_mesh_data_dir(str(tmp_path))
    try:
        c = coords[:, 0]
        np.testing.assert_allclose(vertex_values("smpl_27554"), (c - c.min()) / (c.max() - c.min()), rtol=1e-6)
        set_mesh_data_dir(str(tmp_path / "none"))
        with pytest.raises(FileNotFoundError, match="mds_d=256.npy"):
            vertex_values("smpl_27554")
    finally:
        set_mesh_data_dir(None)


def test_dp_cse_texture_puts_the_texel_of_each_vertex(scene):
    body, d, emb = scene
    tex = np.zeros((4, 8, 3), np.uint8)
    tex[..., 0] = np.arange(8)[None] * 30 + 10  # B encodes x, G encodes y
    tex[..., 1] = np.arange(4)[:, None] * 60 + 10
    texcoords = np.array([[0.0, 0.0], [0.5, 0.25], [1.0, 1.0], [0.9, 0.6]], np.float32)
    verts = torch.tensor([[0, 1, -1], [2, 3, 1]])
    result = DensePoseEmbeddingResult(vertices=verts, mesh_name="m")
    image = np.full((5, 6, 3), 50, np.uint8)
    boxes = torch.tensor([[2.0, 1.0, 5.0, 3.0]])
    pic = CseTextureVisualizer({"m": tex}, texcoords=lambda m: texcoords).visualize(image, boxes, [result])
    want = {(1, 2): tex[0, 0], (1, 3): tex[1, 4], (2, 2): tex[3, 7], (2, 3): tex[2, 7], (2, 4): tex[1, 4]}
    for (y, x), color in want.items():
        assert pic[y, x].tolist() == color.tolist()
    assert pic[1, 4].tolist() == [50, 50, 50] and (pic[0] == 50).all()
    # an alpha channel blends; a mesh without a texture is left as it is
    rgba = np.concatenate([tex, np.full((4, 8, 1), 128, np.uint8)], axis=2)
    pic = CseTextureVisualizer({"m": rgba}, texcoords=lambda m: texcoords).visualize(image, boxes, [result])
    assert pic[1, 3].tolist() == expected_blend(np.float32(50), tex[1, 4], np.float32(128 / 255)).tolist()
    other = DensePoseEmbeddingResult(vertices=verts, mesh_name="other")
    assert (CseTextureVisualizer({"m": tex}, lambda m: texcoords).visualize(image, boxes, [other]) == 50).all()
    with pytest.raises(ValueError, match="texture_atlases_map"):
        build_visualizer("dp_cse_texture")


# ---------------------------------------------------------------------------------------------- apply_net
def _load_tool():
    spec = importlib.util.spec_from_file_location("apply_net_cse_under_test", ROOT / "tools" / "apply_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CsePredictor:
    """Two persons with known vertices (the scene's embeddings), and the mesh's vertex embeddings."""

    def __init__(self, cfg, body, emb):
        self.body, self.emb = body, emb

    def vertex_embeddings(self, mesh_name):
        return self.emb

    def __call__(self, image):
        boxes, targets, fg, out = two_people(self.body, self.emb)
        return {"instances": Instances(image.shape[:2], pred_boxes=boxes, scores=torch.tensor([0.9, 0.85]),
                                       pred_classes=torch.zeros(2, dtype=torch.long), pred_densepose=out)}


def test_apply_net_dump_and_show_on_a_cse_model(scene, tmp_path, capsys):
    body, d, emb = scene
    apply_net = _load_tool()
    mesh_dir = tmp_path / "meshes"
    mesh_dir.mkdir()
    coords = np.random.default_rng(3).normal(size=(body.num_vertices, 4))
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = coords, np.ones(4)
    np.save(mesh_dir / "mds_d=256.npy", pair, allow_pickle=True)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text('MODEL:\n  DEVICE: cpu\n  ROI_DENSEPOSE_HEAD:\n    PREDICTOR_NAME: "DensePoseEmbeddingPredictor"\n'
                   f'DATASETS:\n  MESH_DATA_DIR: "{mesh_dir}"\n  CLASS_TO_MESH_NAME_MAPPING:\n    "0": "smpl_27554"\n'
                   f'DENSEPOSE_EVALUATION:\n  EVAL_DATA_DIR: "{d / "eval"}"\n')
    try:
        run_apply_net_cse(apply_net, cfg, tmp_path, body, d, emb, coords[:, 0], capsys)
    finally:
        set_mesh_data_dir(None)  # apply_net applied the config's MESH_DATA_DIR to the process


def run_apply_net_cse(apply_net, cfg, tmp_path, body, d, emb, mds, capsys):
    model = tmp_path / "model.pth"
    model.write_bytes(b"fake")
    img = tmp_path / "im.png"
    cv2.imwrite(str(img), np.full((40, 60, 3), 90, np.uint8))
    factory = lambda c: CsePredictor(c, body, emb)  # noqa: E731
    rc = apply_net.main(["dump", str(cfg), str(model), str(img), "--output", str(tmp_path / "r.pkl"),
                         "--iuv-dir", str(tmp_path / "iuv")], predictor_factory=factory)
    assert rc == 0
    entry = load_dump(str(tmp_path / "r.pkl"))[0]
    _, targets, fg, _ = two_people(body, emb)
    p0 = entry["pred_densepose"][0]
    assert torch.equal(p0["vertices"].long(), torch.where(fg[0], targets[0], -1)) and "labels" in p0
    iuv = cv2.imread(str(tmp_path / "iuv" / "im_IUV.png"))
    chart = VertexChartMap.from_eval_data(d / "eval")
    assert iuv[6 + 5, 4 + 8, 0] == chart.parts[int(targets[0, 5, 8])]
    # show: CSE and chart visualizers on the same results
    for spec in ("dp_vertex", "bbox,dp_vertex,dp_segm,dp_contour"):
        rc = apply_net.main(["show", str(cfg), str(model), str(img), spec, "--output",
                             str(tmp_path / "o.png"), "--min_score", "0.5"], predictor_factory=factory)
        assert rc == 0
        if spec == "dp_vertex":  # a body pixel has its vertex's MDS value through JET on the grey picture
            pic = cv2.imread(str(tmp_path / "o.png"))
            value = (mds[int(targets[0, 5, 8])] - mds.min()) / (mds.max() - mds.min()) * 255.0
            jet = cv2.applyColorMap(np.uint8([[value]]), cv2.COLORMAP_JET)[0, 0]
            assert pic[6 + 5, 4 + 8].tolist() == expected_blend(np.float32(90), jet, np.float32(0.7)).tolist()
            assert pic[6, 4].tolist() == [90, 90, 90]
    # charts needed but their files are missing: one line naming the file, before any image
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace(str(d / "eval"), str(tmp_path / "nothing")))
    capsys.readouterr()
    rc = apply_net.main(["dump", str(bad), str(model), str(img), "--output", str(tmp_path / "r2.pkl"),
                         "--iuv-dir", str(tmp_path / "iuv2")], predictor_factory=factory)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and str(tmp_path / "nothing" / "SMPL_subdiv.mat") in err[0]
    # a plain dump does without charts
    rc = apply_net.main(["dump", str(bad), str(model), str(img), "--output", str(tmp_path / "r3.pkl")],
                        predictor_factory=factory)
    assert rc == 0 and "labels" not in load_dump(str(tmp_path / "r3.pkl"))[0]["pred_densepose"][0]


# ---------------------------------------------------------------------------------------------- memory
MEMORY_SCRIPT = r"""
import resource, sys, torch
import densepose_fnl.postprocess.vertex_search as vs
from densepose_fnl.postprocess.cse import CseResultsConverter
from densepose_fnl.structures import DensePoseEmbeddingPredictorOutput
torch.set_num_threads(1)
if sys.argv[2] == "surface-tiles":
    vs.TREE_MAX_DIMENSION = -1.0  # the tiled search instead of the KD-tree
V, D, S, N = 27554, 16, 64, int(sys.argv[1])
segm = torch.full((N, 2, S, S), -1.0)
if sys.argv[2] == "random":  # dense search: a small body (the time goes with its pixels, the memory with the box)
    emb = torch.nn.functional.normalize(torch.randn(V, D), dim=1)
    field = torch.randn(N, D, S, S)
    segm[:, 1, 30:33, 31:33] = 1.0
else:  # KD-tree (or tiles): vertices on a smooth surface, a body filling most of the box with embeddings on it
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(2, D, generator=g) * 3, torch.rand(D, generator=g) * 6.28
    emb = torch.cos(torch.rand(V, 2, generator=g) @ w + b)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    field = torch.cos(torch.stack([yy, xx], -1).reshape(-1, 2) @ w + b).t().reshape(1, D, S, S).repeat(N, 1, 1, 1)
    segm[:, 1, 4:60, 8:56] = 1.0
out = DensePoseEmbeddingPredictorOutput(embedding=field, coarse_segm=segm)
boxes = torch.tensor([[0.0, 0.0, 1333.0, 800.0]]).repeat(N, 1)  # every person as large as the image
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
conv = CseResultsConverter(vertex_embeddings=lambda m: emb, class_to_mesh_name={0: "smpl_27554"}, charts="none")
res = conv(boxes, out)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) / 1024.0, int((res[0].vertices >= 0).sum()))
"""


@pytest.mark.parametrize("search", ["random", "surface", "surface-tiles"])
def test_vertex_maps_of_an_800x1333_image_stay_far_under_1_gb(search):
    """3 image-sized persons, SMPL's 27,554 vertices: the peak RSS the matching adds (chunked distances,
    box-size embedding) stays under 0.5 GB, for the dense search of a small body (measured in a fresh process:
    ~0.3 GB) and the KD-tree / the tiled search of bodies filling the image."""
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "3", search], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    added_mb, fg_pixels = proc.stdout.split()
    assert int(fg_pixels) > (1_216 if search == "random" else 700_000)  # > 2 dense chunks (2^20 / V = 38 px) / most of the image
    assert float(added_mb) < 512, added_mb
