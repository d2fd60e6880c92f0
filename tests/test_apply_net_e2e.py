"""apply_net end to end with the real DefaultPredictor: a tiny randomly initialised model (MODEL "" = no
weights) and SCORE_THRESH_TEST 0, so detections come out; dump + IUV PNGs on an image, show on a video."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch

from densepose_fnl.postprocess.charts import int_box_xywh

ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
MODEL:
  DEVICE: cpu
  BACKBONE:
    NAME: build_resnet_fpn_backbone
  RESNETS:
    DEPTH: 50
    RES2_OUT_CHANNELS: 32
    STEM_OUT_CHANNELS: 16
    WIDTH_PER_GROUP: 8
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    OUT_CHANNELS: 16
  ANCHOR_GENERATOR:
    SIZES: [[32], [64], [128], [256], [512]]
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
    PRE_NMS_TOPK_TEST: 100
    POST_NMS_TOPK_TEST: 20
  ROI_HEADS:
    NAME: DensePoseROIHeads
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
    NUM_CLASSES: 1
    SCORE_THRESH_TEST: 0.0
  ROI_BOX_HEAD:
    NAME: FastRCNNConvFCHead
    NUM_FC: 1
    FC_DIM: 32
    POOLER_RESOLUTION: 7
  ROI_DENSEPOSE_HEAD:
    NAME: DensePoseV1ConvXHead
    NUM_STACKED_CONVS: 1
    CONV_HEAD_DIM: 16
    HEATMAP_SIZE: 16
    POOLER_RESOLUTION: 8
    DECODER_ON: False
INPUT:
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 128
TEST:
  DETECTIONS_PER_IMAGE: 5
"""


def _load_tool():
    spec = importlib.util.spec_from_file_location("apply_net_e2e_under_test", ROOT / "tools" / "apply_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_apply_net_end_to_end_with_a_tiny_random_model(tmp_path):
    apply_net = _load_tool()
    torch.manual_seed(0)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "street.png"), image)

    dump, iuv_dir = tmp_path / "res.pkl", tmp_path / "iuv"
    rc = apply_net.main(["dump", str(cfg), "", str(tmp_path / "street.png"), "--output", str(dump),
                         "--iuv-dir", str(iuv_dir), "--min_score", "0.0"])
    assert rc == 0
    (entry,) = torch.load(dump, weights_only=True)
    n = len(entry["scores"])
    assert n > 0 and entry["pred_boxes_XYXY"].shape == (n, 4) and len(entry["pred_densepose"]) == n
    boxes = entry["pred_boxes_XYXY"]
    assert float(boxes[:, 0::2].min()) >= 0 and float(boxes[:, 2].max()) <= 128 and float(boxes[:, 3].max()) <= 96
    for box, dp in zip(boxes, entry["pred_densepose"]):
        _, _, w, h = int_box_xywh(box)
        assert tuple(dp["labels"].shape) == (max(h, 1), max(w, 1)) and tuple(dp["uv"].shape) == (2, max(h, 1), max(w, 1))
        assert int(dp["labels"].max()) <= 24
    iuv = cv2.imread(str(iuv_dir / "street_IUV.png"), cv2.IMREAD_UNCHANGED)
    inds = cv2.imread(str(iuv_dir / "street_INDS.png"), cv2.IMREAD_UNCHANGED)
    assert iuv.shape == (96, 128, 3) and inds.shape == (96, 128) and iuv[:, :, 0].max() <= 24

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 96))
    for k in range(3):
        writer.write(np.roll(image, 8 * k, axis=1))
    writer.release()
    out = tmp_path / "vis" / "clip_vis.mp4"
    rc = apply_net.main(["show", str(cfg), "", str(video), "bbox,dp_segm", "--output", str(out), "--min_score", "0.0"])
    assert rc == 0
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 128
    cap.release()
