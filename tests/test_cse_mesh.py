"""CSE meshes: the catalog, lazily read mesh files in detectron2's formats (the synthetic body written in
them), the memory-light geodesic table, CSE annotations (dp_vertex / ref_model) and their flip, and the
embedding -> closest vertex matching."""
import pickle

import numpy as np
import pytest
import torch

from densepose_fnl.data.meshes import (
    BUILTIN_MESH_NAMES,
    MeshCatalog,
    MeshFileMissingError,
    MeshInfo,
    register_mesh,
    resolve_mesh_data_dir,
    set_mesh_data_dir,
)
from densepose_fnl.evaluation.synthetic_mesh import make_synthetic_mesh, mesh_file_names, write_mesh_files
from densepose_fnl.postprocess.cse import closest_vertices
from densepose_fnl.structures.densepose_annotations import DensePoseDataRelative, DensePoseTransformData
from densepose_fnl.structures.mesh import GeodesicTable, create_mesh

NAME = "test_synthetic_body"


@pytest.fixture(scope="module")
def body():
    return make_synthetic_mesh(grid=4)


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory, body):
    d = tmp_path_factory.mktemp("meshes")
    write_mesh_files(body, d, NAME)
    register_mesh(MeshInfo(NAME, **mesh_file_names(NAME), data_dir=str(d)))
    return d


def test_builtin_catalog_names_and_ids():
    assert BUILTIN_MESH_NAMES[0] == "smpl_27554" and MeshCatalog.get_mesh_id("smpl_27554") == 0
    info = MeshCatalog["smpl_27554"]
    assert (info.data, info.geodists, info.symmetry, info.texcoords) == (
        "smpl_27554.pkl", "geodists/geodists_smpl_27554.pkl", "symmetry/symmetry_smpl_27554.pkl",
        "texcoords/texcoords_smpl_27554.pkl")
    assert MeshCatalog["horse_5004"].texcoords == "texcoords/texcoords_zebra_5002.pkl"  # as detectron2
    for k, name in enumerate(BUILTIN_MESH_NAMES):
        assert MeshCatalog.get_mesh_name(MeshCatalog.get_mesh_id(name)) == name
    with pytest.raises(KeyError, match="not registered"):
        MeshCatalog.get_mesh_id("no_such_mesh")


def test_mesh_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEPOSE_MESH_DATA_DIR", str(tmp_path / "env"))
    assert resolve_mesh_data_dir() == tmp_path / "env"
    from densepose_fnl.config import get_cfg

    cfg = get_cfg()
    cfg.DATASETS.MESH_DATA_DIR = str(tmp_path / "cfg")
    set_mesh_data_dir(cfg)
    try:
        assert resolve_mesh_data_dir() == tmp_path / "cfg"
        assert resolve_mesh_data_dir(tmp_path / "x") == tmp_path / "x"
        with pytest.raises(MeshFileMissingError, match=str(tmp_path / "cfg" / "smpl_27554.pkl")):
            create_mesh("smpl_27554").vertices  # nothing downloaded: the error names the full path
    finally:
        set_mesh_data_dir(None)
    monkeypatch.delenv("DENSEPOSE_MESH_DATA_DIR")
    monkeypatch.setenv("DENSEPOSE_DATASETS", str(tmp_path / "ds"))
    assert resolve_mesh_data_dir() == tmp_path / "ds" / "densepose_meshes"


def test_mesh_files_official_formats_and_lazy_reading(mesh_dir, body):
    files = {k: mesh_dir / v for k, v in mesh_file_names(NAME).items()}
    # a plain pickle.load (detectron2's loaders) reads every file
    data = pickle.load(open(files["data"], "rb"))
    np.testing.assert_array_equal(data["vertices"], body.vertices.astype(np.float32))
    assert data["faces"].shape == (2 * 3 * (3 * 24), 3) and data["faces"].max() == body.num_vertices - 1
    geo = pickle.load(open(files["geodists"], "rb"))
    assert geo.dtype == np.float32 and geo.shape == (body.num_vertices,) * 2
    np.testing.assert_array_equal(geo, body.geodesic.astype(np.float32))
    assert pickle.load(open(files["symmetry"], "rb"))["vertex_transforms"].dtype == np.int64

    mesh = create_mesh(NAME)
    assert create_mesh(NAME) is mesh
    npy = files["geodists"].with_suffix(".npy")
    assert not npy.exists()  # nothing read before first access
    assert mesh.vertices.dtype == torch.float32 and mesh.faces.dtype == torch.int64
    assert mesh.num_vertices == body.num_vertices and mesh.texcoords.shape == (body.num_vertices, 2)
    assert not npy.exists()
    table = mesh.geodists
    assert isinstance(table, GeodesicTable) and npy.exists()
    rows = torch.tensor([5, 0, 5, body.num_vertices - 1])
    np.testing.assert_array_equal(table[rows].numpy(), geo[rows.numpy()])
    cols = torch.tensor([1, 2, 5, 0])
    np.testing.assert_array_equal(table[rows, cols].numpy(), geo[rows.numpy(), cols.numpy()])
    with pytest.raises(IndexError, match="out of range"):
        table[torch.tensor([body.num_vertices])]


def _cse_ann(body, vertex_ids):
    n = len(vertex_ids)
    return {"dp_x": np.linspace(10, 200, n).tolist(), "dp_y": np.linspace(20, 100, n).tolist(),
            "dp_vertex": [int(v) for v in vertex_ids], "ref_model": NAME}


def test_cse_annotation_fields_validation_and_copies(mesh_dir, body):
    ann = _cse_ann(body, [0, 3, 7])
    dp = DensePoseDataRelative.from_annotation(ann)
    assert dp.i is None and dp.vertex_ids.dtype == torch.int64 and dp.vertex_ids.tolist() == [0, 3, 7]
    assert dp.mesh_name == NAME and dp.mesh_id == MeshCatalog.get_mesh_id(NAME)
    for copy in (dp.clone(), dp.to("cpu")):
        assert copy.vertex_ids.tolist() == [0, 3, 7] and copy.mesh_name == NAME
    assert DensePoseDataRelative.validate_annotation(ann) == (True, None)
    bad = dict(ann, dp_vertex=[0, 1])
    ok, reason = DensePoseDataRelative.validate_annotation(bad)
    assert not ok and "dp_vertex has 2 entries" in reason
    ok, reason = DensePoseDataRelative.validate_annotation({k: v for k, v in ann.items() if k != "ref_model"})
    assert not ok and "CSE setting" in reason
    from densepose_fnl.structures.densepose_annotations import validate_densepose_annotation

    with pytest.raises(ValueError, match=r"ann 7: has \['dp_vertex'\] but lacks \['ref_model'\]"):
        validate_densepose_annotation({k: v for k, v in ann.items() if k != "ref_model"}, "ann 7")
    ok, reason = DensePoseDataRelative.validate_annotation(dict(ann, dp_vertex=[0, -1, 2]))
    assert not ok and "0-based" in reason


def test_cse_flip_follows_mesh_symmetry_and_chart_flip(mesh_dir, body):
    from densepose_fnl.data.synthetic import synthetic_uv_symmetry_tables

    u_tab, v_tab = synthetic_uv_symmetry_tables()
    tdata = DensePoseTransformData({"U_transforms": torch.from_numpy(u_tab).float(),
                                    "V_transforms": torch.from_numpy(v_tab).float()})
    # interior chart points of every part (no seam vertices): chart flip then nearest vertex == vertex flip
    g = body.grid
    pts = [(p, c / (g - 1), r / (g - 1)) for p in range(1, 25) for c in range(1, g - 1) for r in range(g)]
    i, u, v = (np.array(t) for t in zip(*pts))
    verts = body.nearest_vertices(i, u, v)
    ann = dict(_cse_ann(body, verts), dp_I=i.tolist(), dp_U=u.tolist(), dp_V=v.tolist())
    dp = DensePoseDataRelative.from_annotation(ann)
    flipped = dp.hflip(tdata)
    sym = pickle.load(open(mesh_dir / mesh_file_names(NAME)["symmetry"], "rb"))["vertex_transforms"]
    assert flipped.vertex_ids.tolist() == sym[verts].tolist()
    chart_then_vertex = body.nearest_vertices(flipped.i.numpy(), flipped.u.numpy(), flipped.v.numpy())
    assert flipped.vertex_ids.tolist() == chart_then_vertex.tolist()
    assert torch.equal(flipped.x, 256 - dp.x) and dp.vertex_ids.tolist() == verts.tolist()  # input unchanged
    assert torch.equal(flipped.hflip(tdata).vertex_ids, dp.vertex_ids)  # interior vertices: an involution
    # CSE-only annotations flip without the UV tables
    assert DensePoseDataRelative.from_annotation(_cse_ann(body, verts)).hflip(None).vertex_ids.tolist() == \
        sym[verts].tolist()


def test_closest_vertices_matches_brute_force_with_background():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 28, 28, generator=g)
    segm = torch.randn(2, 28, 28, generator=g)
    verts = torch.randn(300, 16, generator=g)
    box = (3.7, 5.2, 41.9, 33.4)
    full = closest_vertices(emb, segm, box, verts, chunk_size=37)
    assert full.shape == (33, 41)
    up = torch.nn.functional.interpolate(emb[None], (33, 41), mode="bilinear", align_corners=False)[0]
    lab = torch.nn.functional.interpolate(segm[None], (33, 41), mode="bilinear", align_corners=False)[0].argmax(0)
    d = ((up.permute(1, 2, 0)[..., None, :] - verts) ** 2).sum(-1)
    expect = d.argmin(-1)
    expect[lab == 0] = -1
    assert (full == expect).float().mean() > 0.999 and (full[lab == 0] == -1).all() and (full[lab > 0] >= 0).all()
    py, px = torch.tensor([0, 10, 32, 5]), torch.tensor([0, 40, 3, 17])
    assert closest_vertices(emb, segm, box, verts, points=(py, px)).tolist() == full[py, px].tolist()
    assert torch.equal(closest_vertices(emb, segm, box, verts), full)  # chunking does not change results


def test_synthetic_cse_dataset_loads_and_flips(tmp_path, monkeypatch):
    """--cse: dp_vertex = nearest synthetic-mesh vertex of each point's (I, U, V); the CSE datasets load
    through the regular loader and the mapper flips their vertices through the mesh symmetry."""
    from densepose_fnl.config import get_cfg
    from densepose_fnl.data import DatasetCatalog, DatasetMapper, register_builtin_datasets
    from densepose_fnl.data.synthetic import SYNTHETIC_MESH_NAME, ensure_synthetic_dataset

    root = ensure_synthetic_dataset(tmp_path / "ds", num_train=2, num_val=1, seed=3, min_size=64, max_size=80,
                                    cse=True)
    monkeypatch.setenv("DENSEPOSE_SYNTHETIC_ROOT", str(root))
    register_builtin_datasets()
    body = make_synthetic_mesh()
    dicts = DatasetCatalog.get("densepose_synthetic_cse_train")
    anns = [a for d in dicts for a in d["annotations"] if "dp_vertex" in a]
    assert anns and all(a["ref_model"] == SYNTHETIC_MESH_NAME for a in anns)
    a = anns[0]
    assert a["dp_vertex"] == body.nearest_vertices(a["dp_I"], a["dp_U"], a["dp_V"]).tolist()
    cfg = get_cfg()
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    mapper = DatasetMapper(cfg, is_train=True)
    sym = create_mesh(SYNTHETIC_MESH_NAME).symmetry["vertex_transforms"]
    seen = set()
    for seed in range(8):
        mapper.reseed(seed)
        out = mapper(dicts[0])
        dp = next(d for d in out["instances"].gt_densepose if d is not None)
        orig = next(x for x in dicts[0]["annotations"] if "dp_vertex" in x)
        flipped = not torch.allclose(dp.x, torch.tensor(orig["dp_x"], dtype=torch.float32))
        expect = sym[torch.tensor(orig["dp_vertex"])] if flipped else torch.tensor(orig["dp_vertex"])
        assert dp.vertex_ids.tolist() == expect.tolist() and dp.mesh_name == SYNTHETIC_MESH_NAME
        seen.add(flipped)
    assert seen == {True, False}
