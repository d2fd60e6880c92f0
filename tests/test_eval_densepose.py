"""Official-protocol DensePose AP on a synthetic body mesh: exact GPS values and the resulting AP."""
import math

import numpy as np
import pytest

from densepose_fnl.evaluation import DensePoseCocoEval, GeodesicEvalData, evaluate_boxes, evaluate_densepose, load_coco
from densepose_fnl.evaluation.synthetic_mesh import (
    coco_dataset,
    densepose_annotation,
    make_synthetic_mesh,
    write_eval_data,
)

# Official constants, restated here so the expected values are computed independently of the package.
KAPPA = [0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150]
COARSE = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8]
THRESHOLDS = [0.5 + 0.05 * k for k in range(10)]
BOX = [50.0, 40.0, 100.0, 160.0]  # x, y, w, h -> area 16000 ("large")


@pytest.fixture(scope="module")
def mesh():
    return make_synthetic_mesh(grid=6)


@pytest.fixture(scope="module")
def geo(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_data")
    write_eval_data(mesh, d)
    return GeodesicEvalData(d)


def gt_points():
    """(x, y, I, U, V) in the 256 box frame; distinct pixels of the 100 x 160 box; UV on chart vertices."""
    rng = np.random.RandomState(0)
    pix = rng.permutation(100 * 160)[:40]
    px, py = pix % 100, pix // 100
    parts = np.array([1, 2, 5, 9, 12, 16, 20, 23, 24, 3] * 4)
    u = rng.randint(0, 4, 40) * 0.2  # 0 .. 0.6 so that u + 0.2 stays in the chart
    v = rng.randint(0, 6, 40) * 0.2
    x = (px + 0.5) * 255.0 / BOX[2]
    y = (py + 0.5) * 255.0 / BOX[3]
    return np.stack([x, y, parts, u, v], axis=1)


def nearest_vertex(mesh, part, u, v):
    """Independent brute-force nearest subdivided point of the part, as a mesh vertex."""
    sel = np.nonzero(mesh.subdiv_part == part)[0]
    d2 = ((mesh.subdiv_uv[sel] - np.array([u, v])) ** 2).sum(1)
    return mesh.subdiv_vertex[sel[np.argmin(d2)]]


def render(points, det_box, i_of=None, uv_shift=(0.0, 0.0)):
    """Prediction IUV over det_box: body everywhere (part 1, uv 0), GT points drawn at their pixels."""
    w, h = int(det_box[2]), int(det_box[3])
    iuv = np.zeros((3, h, w), dtype=np.uint8)
    iuv[0] = 1
    for x, y, i, u, v in points:
        px = math.trunc(x * BOX[2] / 255.0 + BOX[0] - det_box[0])
        py = math.trunc(y * BOX[3] / 255.0 + BOX[1] - det_box[1])
        if 0 <= px < w and 0 <= py < h:
            iuv[0, py, px] = i_of(int(i)) if i_of else int(i)
            iuv[1, py, px] = round((u + uv_shift[0]) * 255)
            iuv[2, py, px] = round((v + uv_shift[1]) * 255)
    return iuv


def expected_gps(mesh, points, det_box, i_of=None, uv_shift=(0.0, 0.0)):
    w, h = int(det_box[2]), int(det_box[3])
    vals = []
    for x, y, i, u, v in points:
        px = math.trunc(x * BOX[2] / 255.0 + BOX[0] - det_box[0])
        py = math.trunc(y * BOX[3] / 255.0 + BOX[1] - det_box[1])
        if not (0 <= px < w and 0 <= py < h):
            vals.append(0.0)
            continue
        vg = nearest_vertex(mesh, int(i), u, v)
        ip = i_of(int(i)) if i_of else int(i)
        vd = nearest_vertex(mesh, ip, round((u + uv_shift[0]) * 255) / 255, round((v + uv_shift[1]) * 255) / 255)
        d = mesh.geodesic[vg, vd]
        vals.append(math.exp(-d * d / (2 * KAPPA[COARSE[int(i)]] ** 2)))
    return float(np.mean(vals))


def ap_for(score):
    return 100.0 * sum(t <= score for t in THRESHOLDS) / len(THRESHOLDS)


def run(geo, anns, dets, images=None):
    images = images or [{"id": 1, "width": 400, "height": 300, "file_name": "a.jpg"}]
    coco = load_coco(coco_dataset(images, anns))
    ev = DensePoseCocoEval(coco, dets, geo)
    ev.evaluate(keep_pair_scores=True)
    res = {}
    for mode in ("GPS", "GPSM", "IOU"):
        ev.accumulate(mode)
        res[mode] = ev.summarize(mode, print_fn=lambda s: None)
    return ev, res


def det(box, iuv, score=0.9, image_id=1):
    return {"image_id": image_id, "category_id": 1, "bbox": list(box), "score": score, "uv": iuv}


def test_perfect_prediction_gives_ap_100_in_all_modes(geo):
    pts = gt_points()
    anns = [densepose_annotation(1, 1, BOX, pts)]
    ev, res = run(geo, anns, [det(BOX, render(pts, BOX))])
    scores = ev.pair_scores[1, 1]
    assert scores["gps"][0, 0] == pytest.approx(1.0, abs=1e-12)
    assert scores["mask_iou"][0, 0] == pytest.approx(1.0)
    for mode in ("GPS", "GPSM", "IOU"):
        for k in ("AP", "AP50", "AP75", "APl", "AR", "ARl"):
            assert res[mode][k] == pytest.approx(100.0), (mode, k)
        assert res[mode]["APm"] == -100.0  # no medium GT: official -1 (x 100)
    boxes = evaluate_boxes(load_coco(coco_dataset([{"id": 1, "width": 400, "height": 300}], anns)),
                           [det(BOX, None)], print_fn=lambda s: None)
    assert boxes["AP"] == pytest.approx(100.0)


def test_swapped_parts_lose_exactly_the_formula(mesh, geo):
    pts = gt_points()
    swap = {1: 2, 2: 1, 23: 24, 24: 23}
    i_of = lambda i: swap.get(i, i)  # noqa: E731
    expected = expected_gps(mesh, pts, BOX, i_of=i_of)
    assert 0.55 < expected < 0.95 and min(abs(expected - t) for t in THRESHOLDS) > 1e-3
    ev, res = run(geo, [densepose_annotation(1, 1, BOX, pts)], [det(BOX, render(pts, BOX, i_of=i_of))])
    assert ev.pair_scores[1, 1]["gps"][0, 0] == pytest.approx(expected, abs=1e-6)
    assert res["GPS"]["AP"] == pytest.approx(ap_for(expected))
    assert res["GPSM"]["AP"] == pytest.approx(ap_for(math.sqrt(expected)))  # mask IoU is 1
    assert res["IOU"]["AP"] == pytest.approx(100.0)


def test_shifted_uv_and_shifted_box(mesh, geo):
    pts = gt_points()
    expected = expected_gps(mesh, pts, BOX, uv_shift=(0.2, 0.0))
    assert expected < 0.99
    ev, res = run(geo, [densepose_annotation(1, 1, BOX, pts)], [det(BOX, render(pts, BOX, uv_shift=(0.2, 0.0)))])
    assert ev.pair_scores[1, 1]["gps"][0, 0] == pytest.approx(expected, abs=1e-6)
    assert res["GPS"]["AP"] == pytest.approx(ap_for(expected))

    # detection box 30 px to the right: GT points left of it score 0 (with the official truncation)
    box = [BOX[0] + 30, BOX[1], BOX[2], BOX[3]]
    expected = expected_gps(mesh, pts, box)
    n_out = sum(math.trunc(x * BOX[2] / 255.0 + BOX[0] - box[0]) < 0 for x in pts[:, 0])
    assert n_out > 0
    ev, res = run(geo, [densepose_annotation(1, 1, BOX, pts)], [det(box, render(pts, box))])
    scores = ev.pair_scores[1, 1]
    assert scores["gps"][0, 0] == pytest.approx(expected, abs=1e-6)
    iou = 70 * 160 / (2 * 16000 - 70 * 160)
    assert scores["mask_iou"][0, 0] == pytest.approx(iou)
    assert res["GPS"]["AP"] == pytest.approx(ap_for(expected))
    assert res["GPSM"]["AP"] == pytest.approx(ap_for(math.sqrt(iou * expected)))
    assert res["IOU"]["AP"] == pytest.approx(ap_for(iou))


def test_ignore_rules(geo):
    pts = gt_points()
    other = [250.0, 40.0, 100.0, 160.0]
    anns = [
        densepose_annotation(1, 1, BOX, pts),
        densepose_annotation(2, 1, other, None),  # no DensePose: ignored GT
    ]
    dets = [det(BOX, render(pts, BOX), score=0.5), det(other, render(pts, other), score=0.9)]
    _, res = run(geo, anns, dets)
    # the higher-scored detection sits on the ignored GT (box IoU 1 >= 0.8): ignored, not a false positive
    assert res["GPS"]["AP"] == pytest.approx(100.0)
    # a detection elsewhere is a false positive ranked first: precision 1/2 at full recall
    far = [250.0, 100.0, 60.0, 60.0]
    _, res = run(geo, anns[:1], [dets[0], det(far, render(pts, far), score=0.9)])
    assert res["GPS"]["AP"] == pytest.approx(50.0)
    # ... unless it lies in an image ignore region
    x0, y0, w, h = far
    img = {"id": 1, "width": 400, "height": 300, "ignore_regions_x": [[x0, x0 + w, x0 + w, x0]],
           "ignore_regions_y": [[y0, y0, y0 + h, y0 + h]]}
    _, res = run(geo, anns[:1], [dets[0], det(far, render(pts, far), score=0.9)], images=[img])
    assert res["GPS"]["AP"] == pytest.approx(100.0)
    # images whose GT are all ignored (here: crowd without DensePose) ignore their detections
    crowd = densepose_annotation(3, 2, BOX, None, iscrowd=1)
    images = [{"id": 1, "width": 400, "height": 300}, {"id": 2, "width": 400, "height": 300}]
    _, res = run(geo, anns[:1] + [crowd], [dets[0], det(far, render(pts, far), score=0.9, image_id=2)], images)
    assert res["GPS"]["AP"] == pytest.approx(100.0)


def test_no_predictions_and_missing_densepose(geo):
    coco = load_coco(coco_dataset([{"id": 1, "width": 400, "height": 300}], [densepose_annotation(1, 1, BOX, gt_points())]))
    out = evaluate_densepose(coco, [{"image_id": 1, "category_id": 1, "bbox": BOX, "score": 1.0}], geo, print_fn=lambda s: None)
    assert out["densepose_gps"]["AP"] == -1.0 and set(out) == {"densepose_gps", "densepose_gpsm", "densepose_segm"}
