"""The demo's pictures: dense GT -> chart results, side-by-side panels at >= 512 px, learning curve."""
import json

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.structures import DensePoseChartResult
from densepose_fnl.vis.compare import (
    TITLE_HEIGHT,
    chart_panel,
    dense_chart_results,
    fit_frame,
    scale_chart_results,
    side_by_side,
    stack_rows,
)
from densepose_fnl.vis.learning_curve import ap_table, plot_learning_curve, read_metrics


def _scene(h=120, w=160):
    labels = np.zeros((h, w), np.uint8)
    owner = np.full((h, w), -1, np.int16)
    u = np.zeros((h, w), np.float32)
    v = np.zeros((h, w), np.float32)
    labels[10:60, 20:50], owner[10:60, 20:50] = 2, 0  # person 0: torso
    labels[60:100, 20:35], owner[60:100, 20:35] = 9, 0  # and a leg
    labels[30:110, 100:140], owner[30:110, 100:140] = 23, 1  # person 1
    owner[0, 0] = 2  # person 2: too small
    yy, xx = np.mgrid[0:h, 0:w]
    u[:] = (yy % 50) / 50.0
    v[:] = (xx % 40) / 40.0
    return labels, u, v, owner


def test_dense_chart_results_boxes_and_labels():
    labels, u, v, owner = _scene()
    boxes, results = dense_chart_results(labels, u, v, owner)
    np.testing.assert_array_equal(boxes, [[20, 10, 50, 100], [100, 30, 140, 110]])
    assert len(results) == 2
    r0 = results[0]
    assert tuple(r0.labels.shape) == (90, 30) and tuple(r0.uv.shape) == (2, 90, 30)
    assert set(torch.unique(r0.labels).tolist()) == {0, 2, 9}  # background where the leg box is empty
    assert float(r0.uv[0, 0, 0]) == pytest.approx(u[10, 20])
    assert float(r0.uv[:, 80, 25].abs().sum()) == 0.0  # background pixel of the box: U = V = 0


def test_scale_chart_results_sizes():
    labels, u, v, owner = _scene()
    boxes, results = dense_chart_results(labels, u, v, owner)
    sboxes, sres = scale_chart_results(boxes, results, 4.0)
    assert tuple(sres[0].labels.shape) == (360, 120)
    assert sboxes[0, 0] == 80 and sboxes[0, 1] == 40
    assert set(torch.unique(sres[0].labels).tolist()) == {0, 2, 9}  # nearest: no new labels
    assert float(sres[1].uv.max()) <= 1.0


def test_chart_panel_is_upscaled_titled_and_drawn():
    labels, u, v, owner = _scene()
    image = np.full(labels.shape + (3,), 128, np.uint8)
    boxes, results = dense_chart_results(labels, u, v, owner)
    panel = chart_panel(image, boxes, results, None, title="ground truth", min_side=512)
    assert panel.shape == (512 + TITLE_HEIGHT, 683, 3)
    body = panel[TITLE_HEIGHT:]
    # inside person 0's torso (scaled x 4.27) colours were drawn, the background stayed grey
    assert np.abs(body[150, 140].astype(int) - 128).sum() > 30
    assert (body[5, 600] == 128).all()
    empty = chart_panel(image, np.zeros((0, 4)), [], None, title=None, min_side=100)
    assert empty.shape == image.shape and (empty == 128).all()


def test_side_by_side_and_rows_and_frame():
    a = np.zeros((50, 30, 3), np.uint8)
    b = np.zeros((70, 20, 3), np.uint8)
    sbs = side_by_side([a, b], gap=4)
    assert sbs.shape == (70, 54, 3) and (sbs[60, 10] == 255).all()  # a padded below in white
    rows = stack_rows([sbs, a], gap=2)
    assert rows.shape == (122, 54, 3)
    frame = fit_frame(b, 100, 100)
    assert frame.shape == (100, 100, 3)
    with pytest.raises(ValueError):
        side_by_side([])


def test_learning_curve_plot(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [{"iteration": i, "total_loss": 5.0 / (i + 1), "loss_densepose_U": 0.5 / (i + 1)} for i in range(0, 100, 20)]
    rows[2].update({"bbox/AP": 20.0, "densepose_gps/AP": 5.0, "densepose_segm/AP": 10.0})
    rows[4].update({"bbox/AP": 50.0, "densepose_gps/AP": 25.0, "densepose_segm/AP": 40.0})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    assert len(read_metrics(str(path))) == 5
    table = ap_table(read_metrics(str(path)))
    assert [t["iteration"] for t in table] == [41, 81] and table[1]["DensePose GPS AP"] == 25.0
    out = plot_learning_curve(str(path), str(tmp_path / "curve.png"), title="t")
    img = cv2.imread(out)
    assert img is not None and img.shape[1] >= 800
    with pytest.raises(ValueError, match="no metrics"):
        (tmp_path / "empty.json").write_text("")
        plot_learning_curve(str(tmp_path / "empty.json"), str(tmp_path / "x.png"))


def test_palette_png_is_small(tmp_path):
    from densepose_fnl.demo import palette_png

    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (40, 60, 3)).astype(np.uint8), (1500, 1000), interpolation=cv2.INTER_CUBIC)
    n = palette_png(img, str(tmp_path / "f.png"), max_width=600)
    out = cv2.imread(str(tmp_path / "f.png"))
    assert out.shape == (400, 600, 3) and n < 150_000


def test_extract_chart_results_filters_by_score():
    from densepose_fnl.demo import extract_chart_results
    from densepose_fnl.structures import Instances

    inst = Instances((50, 60))
    inst.pred_boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 30.0, 40.0]])
    inst.scores = torch.tensor([0.9, 0.2])
    inst.pred_densepose = [DensePoseChartResult(torch.ones(20, 10, dtype=torch.long), torch.zeros(2, 20, 10)),
                           DensePoseChartResult(torch.ones(35, 25, dtype=torch.long), torch.zeros(2, 35, 25))]
    boxes, scores, results = extract_chart_results(inst, min_score=0.5)
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9]) and len(results) == 1


def test_part_palette_gives_each_part_its_colour():
    from densepose_fnl.vis.compare import part_palette_lut
    from densepose_fnl.vis.segmentation import FineSegmentationVisualizer

    lut = part_palette_lut()
    assert lut.shape == (256, 1, 3) and lut.dtype == np.uint8
    labels = torch.arange(25).repeat(4, 1)  # one column per part index 0..24
    image = np.zeros((4, 25, 3), np.uint8)
    res = DensePoseChartResult(labels=labels, uv=torch.zeros(2, 4, 25))
    out = FineSegmentationVisualizer(alpha=1.0, cmap=lut).visualize(image, np.array([[0, 0, 25, 4]]), [res])
    colours = {tuple(out[0, k].tolist()) for k in range(1, 25)}
    assert len(colours) == 24 and tuple(out[0, 0].tolist()) == (0, 0, 0)  # background left alone


def test_compare_grid_layout():
    from densepose_fnl.vis.compare import compare_grid

    labels, u, v, owner = _scene()
    image = np.full(labels.shape + (3,), 100, np.uint8)
    boxes, results = dense_chart_results(labels, u, v, owner)
    grid = compare_grid(image, [("gt", boxes, results, None), ("pred", boxes, results, np.array([0.9, 0.8]))], 512)
    panel_h, panel_w = 512 + TITLE_HEIGHT, 683
    assert grid.shape == (2 * panel_h + 6, 2 * panel_w + 6, 3)
    # bottom row is drawn on the grey image: background pixels have equal channels
    bottom = grid[panel_h + 6 + TITLE_HEIGHT:]
    assert (bottom[5, 600, 0] == bottom[5, 600, 1] == bottom[5, 600, 2])
