"""tools/benchmark_cse_matching.py (issue 15, CSE latency): the scenes' table and its exactness figures, and a
bad --boxes value is one line naming it."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from densepose_fnl.analysis.cse_matching import format_table, make_scene, run

ROOT = Path(__file__).resolve().parents[1]


def test_scenes_model_what_they_say():
    verts, field, segm = make_scene("surface", num_vertices=500)
    assert verts.shape == (500, 16) and field.shape == (16, 64, 64) and segm.shape == (2, 64, 64)
    body = segm.argmax(0) > 0
    assert 0.4 < body.float().mean() < 0.8
    # on the surface: every head pixel is within the surface's sampling distance of some vertex; random: not
    near = torch.cdist(field.reshape(16, -1).t(), verts).amin(1)
    rverts, rfield, _ = make_scene("random", num_vertices=500)
    far = torch.cdist(rfield.reshape(16, -1).t(), rverts).amin(1)
    assert near.median() < 0.5 * far.median()
    noisy = make_scene("surface+0.3", num_vertices=500)[1]
    assert (noisy - field).std().item() > 0.2  # the off-surface noise is there, the surface the same


def test_run_gives_exact_matches_for_every_method():
    rows = run(["random", "surface"], [(40, 24)], rounds=1, num_vertices=2000)
    assert [r["scene"] for r in rows] == ["random", "surface"]
    for r in rows:
        assert r["body_pixels"] > 300
        assert r["search_path"] == ("tiles" if r["scene"] == "random" else "tree")
        for m in ("detectron2", "dense", "pruned", "search"):
            assert r[f"{m}_ms"] > 0 and r[f"{m}_agree"] > 0.99  # float64 brute force, up to near-ties
    table = format_table(rows)
    assert table.count("\n") == 3 and "| surface | 40x24 |" in table


def test_cli_prints_the_table_and_json(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_cse_matching.py"), "--scenes", "surface",
                           "--boxes", "30x20", "--rounds", "1", "--vertices", "800", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| surface | 30x20 |" in proc.stdout
    assert json.loads(out.read_text())[0]["box"] == "30x20"
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_cse_matching.py"), "--boxes", "30"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "box must be HxW (e.g. 150x80), got '30'" in bad.stderr
