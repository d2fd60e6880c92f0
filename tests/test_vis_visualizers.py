"""Each `show` visualizer renders the real demo results (parsed from demo_im_IUV/INDS.png) on demo_im.jpg.

One copy of every picture also goes to /tmp/dp_vis_check/ for a look by eye.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densepose_fnl.postprocess.iuv import parse_iuv_image, read_iuv_images
from densepose_fnl.structures import DensePoseChartResult
from densepose_fnl.vis import (
    BoundingBoxVisualizer,
    CompoundVisualizer,
    ContourVisualizer,
    TextureVisualizer,
    build_visualizer,
    load_texture_atlas,
)

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "densepose_demo"
CHECK_DIR = Path("/tmp/dp_vis_check")
pytestmark = pytest.mark.skipif(not (DEMO / "demo_im_IUV.png").is_file(), reason="DensePose demo data not present")


@pytest.fixture(scope="module")
def demo():
    image = cv2.imread(str(DEMO / "demo_im.jpg"))
    iuv, inds = read_iuv_images(str(DEMO / "demo_im_IUV.png"), str(DEMO / "demo_im_INDS.png"))
    boxes, ranks, results = parse_iuv_image(iuv, inds)
    return {"image": image, "iuv": iuv, "fg": iuv[:, :, 0] > 0, "boxes": boxes, "scores": ranks / 20.0, "results": results}


@pytest.fixture(scope="module")
def atlas():
    return load_texture_atlas(str(DEMO / "texture_from_SURREAL.png"))


def _render(name, demo, tmp_path, texture_atlas=None):
    before = demo["image"].copy()
    out = build_visualizer(name, texture_atlas).visualize(demo["image"], demo["boxes"], demo["results"], demo["scores"])
    assert np.array_equal(demo["image"], before)  # the input picture is left alone
    assert out.shape == demo["image"].shape and out.dtype == np.uint8
    fname = name.replace(",", "+") + ".png"
    assert cv2.imwrite(str(tmp_path / fname), out)
    CHECK_DIR.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(CHECK_DIR / fname), out)
    assert cv2.imread(str(tmp_path / fname)).shape == out.shape
    return out, np.any(out != demo["image"], axis=2)


@pytest.mark.parametrize("name", ["dp_segm", "dp_u", "dp_v"])
def test_colormap_visualizers_change_exactly_the_foreground(name, demo, tmp_path):
    _, changed = _render(name, demo, tmp_path)
    fg = demo["fg"]
    assert not np.any(changed & ~fg)  # nothing outside the people
    assert changed[fg].mean() > 0.95  # (almost) every person pixel is tinted


def test_segmentation_colour_follows_the_part_index(demo, tmp_path):
    out, _ = _render("dp_segm", demo, tmp_path)
    fg = demo["fg"]
    img, I = demo["image"].astype(np.float32), demo["iuv"][:, :, 0]
    cmap = cv2.applyColorMap((np.arange(25) * 255.0 / 24).astype(np.uint8)[:, None], cv2.COLORMAP_PARULA)[:, 0]
    expected = np.rint(0.3 * img + 0.7 * cmap[I].astype(np.float32))
    assert np.abs(out[fg].astype(np.float32) - expected[fg]).max() <= 1


def test_contour_draws_lines_inside_the_foreground_only(demo, tmp_path):
    _, changed = _render("dp_contour", demo, tmp_path)
    fg = demo["fg"]
    assert not np.any(changed & ~fg)
    ratio = changed[fg].mean()
    assert 0.05 < ratio < 0.8  # lines, not filled areas
    thick = ContourVisualizer(thickness=3).visualize(demo["image"], demo["boxes"], demo["results"])
    thick_changed = np.any(thick != demo["image"], axis=2)
    assert not np.any(thick_changed & ~fg) and thick_changed.sum() > changed.sum()


def test_texture_transfer_matches_the_notebook_lookup(demo, atlas, tmp_path):
    out, changed = _render("dp_iuv_texture", demo, tmp_path, atlas)
    fg = demo["fg"]
    assert not np.any(changed & ~fg) and changed[fg].mean() > 0.9
    # the notebook: TextureIm[6 * i + j] = atlas_rgb[200 j : 200 j + 200, 200 i : 200 i + 200],
    # texel = tex[int((255 - V) * 199 / 255), int(U * 199 / 255)], output stacked as B, G, R
    rgb = atlas[:, :, ::-1]
    tex = np.zeros((24, 200, 200, 3), np.uint8)
    for i in range(4):
        for j in range(6):
            tex[6 * i + j] = rgb[200 * j : 200 * j + 200, 200 * i : 200 * i + 200]
    I, U, V = (demo["iuv"][:, :, c].astype(np.int64) for c in range(3))
    ys, xs = np.nonzero(fg)
    texel_rgb = tex[I[ys, xs] - 1, ((255 - V[ys, xs]) * 199.0 / 255.0).astype(int), (U[ys, xs] * 199.0 / 255.0).astype(int)]
    opaque = texel_rgb.sum(axis=1) > 0
    assert opaque.mean() > 0.9
    assert np.array_equal(out[ys, xs][opaque], texel_rgb[opaque][:, ::-1])  # BGR, alpha 1
    assert np.array_equal(out[ys, xs][~opaque], demo["image"][ys, xs][~opaque])  # black texels: picture kept


def test_texture_atlas_must_be_a_4x6_grid():
    with pytest.raises(ValueError, match="4 x 6"):
        TextureVisualizer(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="texture_atlas"):
        build_visualizer("dp_iuv_texture", None)
    with pytest.raises(ValueError, match="unknown visualizer"):
        build_visualizer("bbox,dp_nope")


def test_bbox_draws_on_box_edges_and_score_labels(demo, tmp_path):
    _, changed = _render("bbox", demo, tmp_path)
    near_edge = np.zeros_like(changed)
    for x0, y0, x1, y1 in demo["boxes"].int().tolist():
        ring = np.zeros_like(changed)
        ring[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3] = True  # the box outline, 2 px wide
        ring[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2] = False
        ring[max(y0 - 20, 0) : y0 + 22, x0 : x0 + 45] = True  # its score label, above or just inside
        near_edge |= ring
    assert changed.any() and not np.any(changed & ~near_edge)
    x0, y0, x1, y1 = demo["boxes"][-1].int().tolist()
    assert changed[(y0 + y1) // 2, x0 : x0 + 2].any()  # left edge is drawn


def test_compound_bbox_and_contour(demo, tmp_path):
    out, changed = _render("bbox,dp_contour", demo, tmp_path)
    vis = build_visualizer("bbox,dp_contour")
    assert isinstance(vis, CompoundVisualizer)
    step = ContourVisualizer().visualize(
        BoundingBoxVisualizer().visualize(demo["image"], demo["boxes"], None, demo["scores"]), demo["boxes"], demo["results"]
    )
    assert np.array_equal(out, step)


def test_visualizers_accept_no_detections_and_boxes_beyond_the_image():
    image = np.full((40, 50, 3), 90, np.uint8)
    for name in ["bbox", "dp_segm", "dp_u", "dp_v", "dp_contour"]:
        vis = build_visualizer(name)
        assert np.array_equal(vis.visualize(image, torch.zeros(0, 4), []), image)
        r = DensePoseChartResult(
            labels=torch.full((20, 30), 3, dtype=torch.long), uv=torch.rand(2, 20, 30)
        )
        out = vis.visualize(image, torch.tensor([[35.7, 25.2, 65.7, 45.2]]), [r], torch.tensor([0.9]))
        assert out.shape == image.shape
        if name != "bbox":
            changed = np.any(out != image, axis=2)
            assert not changed[:25].any() and not changed[:, :35].any()
