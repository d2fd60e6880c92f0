"""IUV / INDS images in the original DensePose (Detectron1) convention: compose, parse, round trip."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.postprocess.iuv import (
    compose_iuv_image,
    iuv_file_names,
    parse_iuv_image,
    read_iuv_images,
    write_iuv_images,
)
from densepose_fnl.structures import DensePoseChartResult

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "densepose_demo"
needs_demo = pytest.mark.skipif(not (DEMO / "demo_im_IUV.png").is_file(), reason="DensePose demo data not present")


def _result(h, w, label, u, v, fg=None):
    fg = np.ones((h, w), bool) if fg is None else fg
    labels = torch.from_numpy(np.where(fg, label, 0).astype(np.int64))
    uv = torch.from_numpy(np.stack([np.where(fg, u, 0.0), np.where(fg, v, 0.0)]).astype(np.float32))
    return DensePoseChartResult(labels=labels, uv=uv)


@needs_demo
def test_demo_pngs_round_trip_bit_identical(tmp_path):
    iuv, inds = read_iuv_images(str(DEMO / "demo_im_IUV.png"), str(DEMO / "demo_im_INDS.png"))
    boxes, ranks, results = parse_iuv_image(iuv, inds)
    assert ranks.tolist() == list(range(7, 20))  # 13 persons; ranks 0..6 were below Detectron1's 0.7
    assert boxes.shape == (13, 4) and len(results) == 13
    for box, r in zip(boxes, results):
        x0, y0, x1, y1 = box.int().tolist()
        assert tuple(r.labels.shape) == (y1 - y0, x1 - x0) and tuple(r.uv.shape) == (2, y1 - y0, x1 - x0)
        assert r.labels.max() <= 24 and 0 <= float(r.uv.min()) and float(r.uv.max()) <= 1
        assert bool(((r.uv > 0).any(0) <= (r.labels > 0)).all())  # U, V only on the person's own pixels

    # explicit INDS values, and contiguous ranks through index_offset: both bit-identical
    for kwargs in ({"person_inds": ranks.int().tolist()}, {"index_offset": 7}):
        iuv2, inds2 = compose_iuv_image(boxes, ranks, results, iuv.shape[:2], score_threshold=0.0, **kwargs)
        assert iuv2.dtype == np.uint8 and inds2.dtype == np.uint8
        assert np.array_equal(iuv2, iuv) and np.array_equal(inds2, inds)

    # written with cv2.imwrite and read back: same pixels as the original files
    iuv_path, inds_path = write_iuv_images(str(tmp_path), "demo_im.jpg", iuv2, inds2)
    assert Path(iuv_path).name == "demo_im_IUV.png" and Path(inds_path).name == "demo_im_INDS.png"
    assert np.array_equal(cv2.imread(iuv_path, cv2.IMREAD_UNCHANGED), cv2.imread(str(DEMO / "demo_im_IUV.png"), cv2.IMREAD_UNCHANGED))
    assert np.array_equal(cv2.imread(inds_path, cv2.IMREAD_UNCHANGED), cv2.imread(str(DEMO / "demo_im_INDS.png"), cv2.IMREAD_UNCHANGED))


@needs_demo
def test_demo_iuv_has_i_in_the_blue_channel_and_matches_the_picture():
    import matplotlib.image as mpimg  # reads PNGs as RGB, independently of OpenCV

    rgb = (mpimg.imread(str(DEMO / "demo_im_IUV.png")) * 255).round().astype(np.uint8)
    assert rgb[:, :, 2].max() == 24  # blue = I (0..24); red / green = U, V (up to 255)
    assert rgb[:, :, 0].max() > 200 and rgb[:, :, 1].max() > 200
    image = cv2.imread(str(DEMO / "demo_im.jpg"))
    assert image.shape[:2] == rgb.shape[:2]


def test_compose_visits_ascending_scores_lower_score_wins_and_rank0_is_invisible():
    a = _result(4, 4, 3, 0.5, 0.25)  # score 0.9
    b = _result(4, 4, 7, 0.75, 1.0)  # score 0.8, overlaps a by two columns
    c = _result(2, 2, 1, 0.1, 0.1)  # score 0.3 (below threshold, still counts in the ranks)
    boxes = torch.tensor([[2.9, 1.2, 6.9, 5.2], [0.0, 1.0, 4.0, 5.0], [8.0, 0.0, 10.0, 2.0]])
    iuv, inds = compose_iuv_image(boxes, torch.tensor([0.9, 0.8, 0.3]), [a, b, c], (8, 10))
    # c (rank 0) skipped by the 0.7 threshold; b has rank 1, a rank 2; a placed at (int 2, int 1)
    assert np.all(iuv[1:5, 0:4, 0] == 7) and np.all(inds[1:5, 0:4] == 1)
    assert np.all(iuv[1:5, 4:6, 0] == 3) and np.all(inds[1:5, 4:6] == 2)
    assert np.all(iuv[:, 8:, :] == 0)
    assert np.all(iuv[1:5, 0:4, 1] == 191) and np.all(iuv[1:5, 0:4, 2] == 255)  # trunc(0.75 * 255) = 191
    assert np.all(iuv[1:5, 4:6, 1] == 127) and np.all(iuv[1:5, 4:6, 2] == 63)

    # with every person drawn, the lowest one (rank 0) is in IUV but 0 in INDS; index_offset shows it
    iuv, inds = compose_iuv_image(boxes, torch.tensor([0.9, 0.8, 0.3]), [a, b, c], (8, 10), score_threshold=0.0)
    assert np.all(iuv[0:2, 8:10, 0] == 1) and np.all(inds[0:2, 8:10] == 0)
    _, inds = compose_iuv_image(boxes, torch.tensor([0.9, 0.8, 0.3]), [a, b, c], (8, 10), score_threshold=0.0, index_offset=1)
    assert np.all(inds[0:2, 8:10] == 1) and np.all(inds[1:5, 0:4] == 2)


def test_compose_fills_each_channel_only_where_still_zero_and_clips_at_the_border():
    first = _result(3, 3, 5, 0.0, 0.5)  # U exactly 0: a later person may still fill it
    later = _result(3, 3, 9, 0.4, 0.9)
    boxes = torch.tensor([[0.0, 0.0, 3.0, 3.0], [0.0, 0.0, 3.0, 3.0]])
    iuv, _ = compose_iuv_image(boxes, torch.tensor([0.8, 0.9]), [first, later], (3, 3))
    assert np.all(iuv[:, :, 0] == 5) and np.all(iuv[:, :, 1] == 102) and np.all(iuv[:, :, 2] == 127)
    # a box hanging over the right / bottom edge is cropped instead of failing
    iuv, inds = compose_iuv_image(torch.tensor([[1.0, 1.0, 4.0, 4.0]]), torch.tensor([0.9]), [later], (3, 3), index_offset=4)
    assert np.all(iuv[1:, 1:, 0] == 9) and iuv[0, 0, 0] == 0 and np.all(inds[1:, 1:] == 4)


def test_parse_keeps_rank0_person_and_round_trips_synthetic():
    rng = np.random.default_rng(0)
    results = [_result(5, 6, p, rng.random((5, 6)), rng.random((5, 6)), rng.random((5, 6)) > 0.3) for p in (2, 11, 24)]
    boxes = torch.tensor([[0.0, 0.0, 6.0, 5.0], [3.5, 2.2, 9.5, 7.2], [10.0, 6.0, 16.0, 11.0]])
    scores = torch.tensor([0.75, 0.95, 0.85])
    iuv, inds = compose_iuv_image(boxes, scores, results, (12, 16))
    assert set(np.unique(inds).tolist()) == {0, 1, 2}  # person 0 (lowest) is invisible in INDS
    b, ranks, parsed = parse_iuv_image(iuv, inds)
    assert ranks.tolist() == [0.0, 1.0, 2.0]
    iuv2, inds2 = compose_iuv_image(b, ranks, parsed, (12, 16), score_threshold=0.0, person_inds=ranks.int().tolist())
    assert np.array_equal(iuv2, iuv) and np.array_equal(inds2, inds)
    assert iuv_file_names("dir/frame.0001.jpg") == ("frame.0001_IUV.png", "frame.0001_INDS.png")
