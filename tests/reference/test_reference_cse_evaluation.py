"""Reference check: our CSE evaluation gives the OFFICIAL DensePoseCocoEval numbers (CSE path).

The scene of test_reference_evaluation.py (misses, false positives, an ignored GT, a crowd region, an ignore
region, an image without GT, small / medium / large people, float boxes, a box past the border, tied
scores), its GT given CSE points: ``dp_vertex`` = the synthetic body's vertex nearest to each point's
(I, U, V); images 1-3 on mesh ``smpl_27554`` (the synthetic body written under that name, so the official
per-part normalisers apply), the others on ``test_cse_body`` (normaliser 0.255). Predictions are detectron2's
CSE result dicts (``coarse_segm`` (2, S, S), ``embedding`` (8, S, S); S the integer box, or 32 for a
third of them so the resizing matters) with vertex embeddings that vary smoothly over the body: the GT vertex's embedding plus
noise at the GT points (wrong vertices, background points), noise elsewhere. Our side: DensePoseCocoEval on
the raw results (reduced to per-GT-point vertices + a mask RLE as the dataset evaluator records them),
geodesics from the mesh catalog's memory-light table. Peer: peer_scripts/eval_cse_official.py. Every GPS /
GPSm / IOU summary stat must agree to 1e-6 (x 100)."""
import json

import numpy as np
import pytest
import torch

from densepose_fnl.data.meshes import MeshCatalog, MeshInfo
from densepose_fnl.evaluation.densepose_coco_eval import evaluate_densepose
from densepose_fnl.evaluation.evaluator import load_coco
from densepose_fnl.evaluation.synthetic_mesh import make_synthetic_mesh, mesh_file_names, write_eval_data, write_mesh_files

from peer import peer_python, run_peer  # noqa: F401  (peer_python: fixture)
from test_reference_evaluation import build_scene

TOL = 1e-6
MESHES = ("smpl_27554", "test_cse_body")
MODE_KEYS = {"GPS": "densepose_gps", "GPSM": "densepose_gpsm", "IOU": "densepose_segm"}


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def build_cse_scene(body):
    rng = np.random.RandomState(7)
    gt, chart_results = build_scene()
    for ann in gt["annotations"]:
        if "dp_I" in ann:
            ann["dp_vertex"] = body.nearest_vertices(ann["dp_I"], ann["dp_U"], ann["dp_V"]).tolist()
            ann["ref_model"] = MESHES[0] if ann["image_id"] <= 3 else MESHES[1]
    xyz = body.vertices
    base = np.concatenate([xyz * 10.0, rng.normal(0, 0.02, (len(xyz), 5))], 1).astype(np.float32)
    vertex_embeddings = {MESHES[0]: torch.from_numpy(base), MESHES[1]: torch.from_numpy(base * 0.8)}
    results = []
    for n, r in enumerate(chart_results):
        box = r["bbox"]
        h, w = int(box[3]), int(box[2])
        S = (32, 32) if n % 3 == 2 else (h, w)
        yy, xx = np.mgrid[0 : S[0], 0 : S[1]]
        body_mask = ((xx + 0.5) / S[1] - 0.5) ** 2 / 0.45**2 + ((yy + 0.5) / S[0] - 0.5) ** 2 / 0.48**2 <= 1
        segm = np.stack([np.zeros(S), np.where(body_mask, 1.0, -1.0)]).astype(np.float32)
        emb = rng.normal(0, 1.0, (8,) + S).astype(np.float32)
        src = [g for g in gt["annotations"] if g["image_id"] == r["image_id"] and "dp_vertex" in g
               and _iou(g["bbox"], box) > 0.5]
        if src:
            g = src[0]
            sigma, p_wrong, p_drop = [(0.01, 0.0, 0.0), (0.05, 0.05, 0.05), (0.2, 0.2, 0.1), (0.02, 0.1, 0.0)][n % 4]
            table = vertex_embeddings[g["ref_model"]].numpy()
            gx, gy, gw, gh = g["bbox"]
            px = (np.array(g["dp_x"]) * gw / 255.0 + gx - box[0]).astype(int)
            py = (np.array(g["dp_y"]) * gh / 255.0 + gy - box[1]).astype(int)
            for x, y, v in zip(px, py, g["dp_vertex"]):
                if not (0 <= x < w and 0 <= y < h):
                    continue
                sx, sy = int(x * S[1] / w), int(y * S[0] / h)
                if rng.uniform() < p_drop:
                    segm[1, sy, sx] = -9.0
                vert = rng.randint(len(table)) if rng.uniform() < p_wrong else v
                emb[:, sy, sx] = table[vert] + rng.normal(0, sigma, 8)
        results.append({"image_id": r["image_id"], "category_id": r["category_id"], "bbox": list(box),
                        "score": r["score"], "coarse_segm": torch.from_numpy(segm),
                        "embedding": torch.from_numpy(emb)})
    return gt, results, vertex_embeddings


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("cse_scene")
    body = make_synthetic_mesh(grid=7)
    write_eval_data(body, d / "eval_data")
    for name in MESHES:
        write_mesh_files(body, d / "meshes", name)
    gt, results, vertex_embeddings = build_cse_scene(body)
    (d / "gt.json").write_text(json.dumps(gt))
    torch.save({"results": results, "vertex_embeddings": vertex_embeddings}, d / "results.pt")
    saved = {name: MeshCatalog.data.get(name) for name in MESHES}
    for name in MESHES:
        MeshCatalog[name] = MeshInfo(name, **mesh_file_names(name), data_dir=str(d / "meshes"))
    yield d, gt, results, vertex_embeddings
    for name, info in saved.items():
        if info is None:
            del MeshCatalog.data[name]
        else:
            MeshCatalog[name] = info


def test_cse_evaluation_matches_official_densepose_coco_eval(peer_python, scene):
    d, gt, results, vertex_embeddings = scene
    run_peer("eval_cse_official.py", d / "gt.json", d / "results.pt", d / "eval_data", d / "meshes",
             ",".join(MESHES), d / "official.json", timeout=300, python=peer_python)
    official = json.loads((d / "official.json").read_text())
    ours = evaluate_densepose(load_coco(gt), results, None, vertex_embeddings=vertex_embeddings.__getitem__,
                              print_fn=lambda s: None)
    mismatches = []
    spread = set()
    for mode, key in MODE_KEYS.items():
        names, stats = official[mode]["metrics"], official[mode]["stats"]
        for name, ref in zip(names, stats):
            got = ours[key][name]
            spread.add(round(got, 3))
            if abs(got - ref * 100) > TOL:
                mismatches.append(f"{mode} {name}: ours {got:.6f} official {ref * 100:.6f}")
    assert not mismatches, "\n".join(mismatches) + "\nofficial GPS pairs: " + json.dumps(official["GPS"]["gps"])[:3000]
    # the scene is not degenerate: AP varies and is neither 0 nor 100 everywhere
    gps = official["GPS"]["stats"]
    print("official GPS / GPSm / IOU AP:", gps[0], official["GPSM"]["stats"][0], official["IOU"]["stats"][0])
    assert 0.05 < gps[0] < 0.95 and len(spread) > 8
