"""Reference check: tools/evaluate_results.py gives the OFFICIAL DensePoseCocoEval numbers.

One synthetic COCO-DensePose scene (ground truth JSON + challenge-format results file with imperfect
predictions) and the synthetic body mesh's eval files in the official formats (SMPL_subdiv.mat,
SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl) are written to tmp_path. Our side runs the
``tools/evaluate_results.py`` CLI on them (``--output`` JSON); the peer (peer_scripts/eval_official.py)
runs detectron2's DensePoseCocoEval on the same files, its data-file download redirected to them. Every
summary stat of GPS, GPSm and IOU (AP, AP20/30/40 at min threshold 0.2, AP50, AP75, APm, APl, AR, AR50,
AR75, ARm, ARl) must agree to 1e-6 (values x 100, as both report them).

The scene covers: perturbed part labels and UV (several noise levels so AP varies across thresholds),
points the prediction leaves as background, a missed person, false-positive detections, a detection on an
ignored GT (no DensePose; box IoU >= 0.8), a crowd region, an image ignore region (a GT and a detection
inside it), an image without GT, small / medium / large people, float boxes, a box running past the image
border, distinct and tied scores.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from densepose_fnl.evaluation.results_format import encode_iuv
from densepose_fnl.evaluation.synthetic_mesh import (
    coco_dataset,
    densepose_annotation,
    make_synthetic_mesh,
    write_eval_data,
)

from peer import REPO, peer_python, run_peer  # noqa: F401  (peer_python: fixture)

THRESHOLDS = ("0.5", "0.2")
MODE_KEYS = {"GPS": "densepose_gps", "GPSM": "densepose_gpsm", "IOU": "densepose_segm"}
TOL = 1e-6


# ----------------------------------------------------------------------------- synthetic scene
def _ellipse(h, w, cx=0.5, cy=0.5, rx=0.45, ry=0.48):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + 0.5) / w - cx) ** 2 / rx**2 + ((yy + 0.5) / h - cy) ** 2 / ry**2 <= 1.0


def _gt_person(rng, ann_id, image_id, bbox, n_points):
    """A person with dp points (x, y in the 256 box frame, I 1..24, U, V in [0, 1]) and a coarse mask."""
    m = _ellipse(256, 256, rx=0.42, ry=0.47)
    coarse = np.zeros((256, 256), dtype=np.uint8)
    band = (np.mgrid[0:256, 0:256][0] * 14) // 256 + 1  # 14 horizontal bands of coarse parts
    coarse[m] = band[m]
    pts = np.stack(
        [
            rng.uniform(0, 255, n_points),
            rng.uniform(0, 255, n_points),
            rng.randint(1, 25, n_points).astype(np.float64),
            rng.uniform(0, 1, n_points),
            rng.uniform(0, 1, n_points),
        ],
        axis=1,
    )
    return densepose_annotation(ann_id, image_id, bbox, pts, coarse_mask=coarse)


def _prediction(rng, gt, det_box, p_label=0.0, uv_sigma=0.0, p_drop=0.0, body=(0.5, 0.5, 0.45, 0.48)):
    """IUV (uint8 (3, int(h), int(w))) over det_box: an elliptic body of part 7 with random UV, and at the
    pixels of gt's points (official mapping) their I, U, V, perturbed: label replaced by a random part with
    probability p_label, UV + N(0, uv_sigma) clipped, point left as background with probability p_drop."""
    w, h = int(det_box[2]), int(det_box[3])
    iuv = np.zeros((3, h, w), dtype=np.uint8)
    body_mask = _ellipse(h, w, *body)
    iuv[0][body_mask] = 7
    iuv[1][body_mask] = rng.randint(0, 256, body_mask.sum())
    iuv[2][body_mask] = rng.randint(0, 256, body_mask.sum())
    if gt is None:
        return iuv
    gx, gy, gw, gh = gt["bbox"]
    px = (np.array(gt["dp_x"]) * gw / 255.0 + gx - det_box[0]).astype(int)
    py = (np.array(gt["dp_y"]) * gh / 255.0 + gy - det_box[1]).astype(int)
    for x, y, i, u, v in zip(px, py, gt["dp_I"], gt["dp_U"], gt["dp_V"]):
        if not (0 <= x < w and 0 <= y < h):
            continue
        if rng.uniform() < p_drop:
            iuv[:, y, x] = 0
            continue
        label = rng.randint(1, 25) if rng.uniform() < p_label else int(i)
        u = np.clip(u + rng.normal(0, uv_sigma), 0, 1) if uv_sigma else u
        v = np.clip(v + rng.normal(0, uv_sigma), 0, 1) if uv_sigma else v
        iuv[:, y, x] = (label, int(u * 255), int(v * 255))
    return iuv


def _result(image_id, box, score, iuv):
    return {"image_id": image_id, "category_id": 1, "bbox": [float(v) for v in box], "score": float(score),
            **encode_iuv(iuv)}


def build_scene():
    rng = np.random.RandomState(2024)
    images = [
        {"id": 1, "width": 400, "height": 300, "file_name": "1.jpg"},
        {"id": 2, "width": 320, "height": 240, "file_name": "2.jpg"},
        {"id": 3, "width": 300, "height": 300, "file_name": "3.jpg"},
        {"id": 4, "width": 320, "height": 240, "file_name": "4.jpg",
         "ignore_regions_x": [[200.0, 310.0, 310.0, 200.0]], "ignore_regions_y": [[20.0, 20.0, 220.0, 220.0]]},
        {"id": 5, "width": 200, "height": 200, "file_name": "5.jpg"},  # no GT at all
        {"id": 6, "width": 360, "height": 280, "file_name": "6.jpg"},
    ]
    A = _gt_person(rng, 1, 1, [30.5, 20.25, 120.0, 200.5], 40)  # large
    B = _gt_person(rng, 2, 1, [180.0, 40.0, 110.0, 180.0], 35)  # large
    S = _gt_person(rng, 3, 1, [330.0, 200.0, 22.0, 40.0], 12)  # small (area 880): only in "all"
    C = _gt_person(rng, 4, 2, [40.0, 50.0, 60.0, 90.0], 25)  # medium
    D = _gt_person(rng, 5, 2, [150.0, 60.0, 50.0, 80.0], 20)  # medium, missed
    E = densepose_annotation(6, 2, [220.0, 30.0, 80.0, 150.0], None)  # no DensePose: ignored
    F = _gt_person(rng, 7, 3, [190.0, 60.0, 100.0, 190.0], 30)  # large, detection runs past the border
    crowd = densepose_annotation(8, 3, [10.0, 20.0, 120.0, 150.0], None, iscrowd=1)
    G = _gt_person(rng, 9, 4, [30.0, 30.0, 90.0, 170.0], 30)  # large
    H = _gt_person(rng, 10, 4, [220.0, 40.0, 70.0, 150.0], 20)  # inside the ignore region: dropped
    P = _gt_person(rng, 11, 6, [20.0, 30.0, 100.0, 200.0], 40)
    Q = _gt_person(rng, 12, 6, [150.0, 20.0, 90.0, 220.0], 40)
    R = _gt_person(rng, 13, 6, [260.0, 100.0, 70.0, 120.0], 30)  # medium (8400)
    anns = [A, B, S, C, D, E, F, crowd, G, H, P, Q, R]

    def jitter(box, dx, dy, dw=0.0, dh=0.0):
        return [box[0] + dx, box[1] + dy, box[2] + dw, box[3] + dh]

    results = []
    # image 1: good A, noisy B (label swaps + UV noise), small S, a false positive
    box = jitter(A["bbox"], 1.3, -2.1, 2.4, 1.7)
    results.append(_result(1, box, 0.97, _prediction(rng, A, box, uv_sigma=0.03)))
    box = jitter(B["bbox"], -3.6, 2.2, 4.1, -3.3)
    results.append(_result(1, box, 0.88, _prediction(rng, B, box, p_label=0.35, uv_sigma=0.15, p_drop=0.1)))
    box = jitter(S["bbox"], 0.4, 1.1, -1.0, 0.5)
    results.append(_result(1, box, 0.55, _prediction(rng, S, box, uv_sigma=0.05)))
    box = [60.0, 230.0, 90.0, 60.0]
    results.append(_result(1, box, 0.61, _prediction(rng, None, box)))
    # image 2: medium C, D missed, detection on the ignored E (box IoU >= 0.8), a low-score duplicate of C
    box = jitter(C["bbox"], 2.0, 1.5, -1.5, 2.5)
    results.append(_result(2, box, 0.91, _prediction(rng, C, box, p_label=0.1, uv_sigma=0.06, p_drop=0.05)))
    box = jitter(E["bbox"], 1.0, 2.0, 1.0, -2.0)
    results.append(_result(2, box, 0.93, _prediction(rng, None, box)))
    box = jitter(C["bbox"], 6.5, -5.0, 3.0, 4.0)
    results.append(_result(2, box, 0.42, _prediction(rng, C, box, p_label=0.5, uv_sigma=0.2)))
    # image 3: F with its box running past the right border, a detection on the crowd region
    box = jitter(F["bbox"], 8.25, -4.5, 30.0, 6.0)  # x1 = 328.25 > 300
    results.append(_result(3, box, 0.77, _prediction(rng, F, box, p_label=0.2, uv_sigma=0.1, body=(0.42, 0.5, 0.4, 0.48))))
    box = [12.0, 25.0, 110.0, 140.0]
    results.append(_result(3, box, 0.83, _prediction(rng, None, box)))
    # image 4: G, and a detection filling a box inside the ignore region (dropped), a FP beside G
    box = jitter(G["bbox"], -1.0, 3.0, 2.0, -4.0)
    results.append(_result(4, box, 0.88, _prediction(rng, G, box, p_label=0.25, uv_sigma=0.08)))  # tie with B
    box = [230.0, 50.0, 60.0, 140.0]
    iuv = np.zeros((3, 140, 60), dtype=np.uint8)
    iuv[0] = 3
    results.append(_result(4, box, 0.99, iuv))
    box = [100.0, 150.0, 60.0, 70.0]
    results.append(_result(4, box, 0.35, _prediction(rng, None, box)))
    # image 5: a detection on an image without GT (all-ignored image: ignored)
    box = [20.0, 20.0, 80.0, 120.0]
    results.append(_result(5, box, 0.95, _prediction(rng, None, box)))
    # image 6: three people at three noise levels, one detection shifted, one small-body prediction
    box = jitter(P["bbox"], 0.5, 0.5)
    results.append(_result(6, box, 0.72, _prediction(rng, P, box, p_label=0.05, uv_sigma=0.02)))
    box = jitter(Q["bbox"], 12.0, 8.0, -6.0, -10.0)
    results.append(_result(6, box, 0.81, _prediction(rng, Q, box, p_label=0.15, uv_sigma=0.1, p_drop=0.05)))
    box = jitter(R["bbox"], -2.0, 1.0, 3.0, 2.0)
    results.append(_result(6, box, 0.66, _prediction(rng, R, box, p_label=0.6, uv_sigma=0.3,
                                                     body=(0.5, 0.5, 0.3, 0.35))))
    box = [150.0, 160.0, 100.0, 110.0]  # FP overlapping Q partially
    results.append(_result(6, box, 0.5, _prediction(rng, Q, box)))
    return coco_dataset(images, anns), results


# ----------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_scene")
    write_eval_data(make_synthetic_mesh(grid=7), d / "eval_data")
    gt, results = build_scene()
    (d / "gt.json").write_text(json.dumps(gt))
    (d / "results.json").write_text(json.dumps(results))
    return d


def _ours(scene, thr):
    out = scene / f"ours_{thr}.json"
    cmd = [sys.executable, str(REPO / "tools" / "evaluate_results.py"), "--gt", str(scene / "gt.json"),
           "--results", str(scene / "results.json"), "--eval-data", str(scene / "eval_data"),
           "--cache-dir", str(scene / "cache"), "--min-iou-threshold", thr, "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_evaluate_results_matches_official_densepose_coco_eval(peer_python, scene):
    official_path = scene / "official.json"
    run_peer("eval_official.py", scene / "gt.json", scene / "results.json", scene / "eval_data", official_path,
             *THRESHOLDS, timeout=300, python=peer_python)
    official = json.loads(official_path.read_text())

    mismatches = []
    for thr in THRESHOLDS:
        ours = _ours(scene, thr)
        for mode, key in MODE_KEYS.items():
            ref = official[thr][mode]
            assert list(ours[key].keys()) == ref["metrics"], (thr, mode, list(ours[key]), ref["metrics"])
            for name, stat in zip(ref["metrics"], ref["stats"]):
                if not abs(ours[key][name] - stat * 100) <= TOL:
                    mismatches.append(f"min_thr {thr} {mode} {name}: ours {ours[key][name]!r} "
                                      f"official {stat * 100!r}")
        if thr == "0.5":
            # the scene is not degenerate: AP strictly between 0 and 100, modes differ, AP varies by threshold
            gps = official[thr]["GPS"]["stats"]
            aps = [official[thr][m]["stats"][0] for m in MODE_KEYS]
            assert all(0.05 < ap < 0.95 for ap in aps), aps
            assert len({round(ap, 6) for ap in aps}) == 3, aps
            assert gps[1] > gps[2], gps  # AP50 > AP75
            assert -1 not in [round(s, 6) for m in MODE_KEYS for s in official[thr][m]["stats"]]
    assert not mismatches, "\n".join(mismatches) + "\nofficial pair scores: " + json.dumps(
        official["0.5"]["GPSM"]["pair_scores"])
