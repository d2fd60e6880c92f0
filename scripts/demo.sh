#!/usr/bin/env bash
# The README's demo on a fresh machine (CPU is enough): set up .venv, generate the embedded synthetic
# DensePose set, train Mobile Parsing R-CNN B on it from random init (a few minutes), evaluate it
# (box AP + DensePose AP), draw its predictions on a few validation pictures and a video, then export it
# to int8 ONNX and score / draw that with ONNX Runtime.
#
#   bash scripts/demo.sh                 # everything under output/demo
# Environment knobs:
#   DEMO_OUTPUT=dir        where the model, logs, metrics and pictures go (default output/demo)
#   DENSEPOSE_SYNTHETIC_ROOT=dir   the synthetic set (default datasets/synthetic; generated if missing)
#   DEMO_NUM_PROCS=N       training processes (default 2: one per core of a 2-core CPU, gloo DDP)
#   DEMO_MAX_ITER=N        training iterations (default: the config's, 300)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup_env.sh
PY=.venv/bin/python
CONFIG=configs/synthetic/mobile_parsing_rcnn_b_synthetic.yaml
OUT=${DEMO_OUTPUT:-output/demo}
export DENSEPOSE_SYNTHETIC_ROOT=${DENSEPOSE_SYNTHETIC_ROOT:-datasets/synthetic}
NPROC=${DEMO_NUM_PROCS:-2}
EXTRA=()
if [ -n "${DEMO_MAX_ITER:-}" ]; then
  EXTRA+=(SOLVER.MAX_ITER "$DEMO_MAX_ITER" SOLVER.STEPS "($((DEMO_MAX_ITER * 7 / 10)), $((DEMO_MAX_ITER * 9 / 10)))")
fi

echo "== 1/6 synthetic dataset in $DENSEPOSE_SYNTHETIC_ROOT (200 train / 50 val images; kept if already there)"
"$PY" -c "from densepose_fnl.data import ensure_synthetic_dataset as e; print(e('$DENSEPOSE_SYNTHETIC_ROOT'))"

echo "== 2/6 training B from random init on CPU ($NPROC processes) -> $OUT"
start=$(date +%s)
"$PY" tools/train_net.py --config-file "$CONFIG" --num-gpus "$NPROC" --dist-url auto \
  OUTPUT_DIR "$OUT" DATASETS.TEST "()" "${EXTRA[@]}"
echo "training took $(( $(date +%s) - start )) s; losses per 20 iterations in $OUT/metrics.json"

echo "== 3/6 evaluation on densepose_synthetic_val (box AP, DensePose GPS/GPSm/IOU AP)"
"$PY" tools/train_net.py --config-file "$CONFIG" --eval-only --num-gpus "$NPROC" --dist-url auto \
  MODEL.WEIGHTS "$OUT/model_final.pth" \
  OUTPUT_DIR "$OUT/eval"

echo "== 4/6 pictures of predictions"
mkdir -p "$OUT/vis"
if [ -f tools/apply_net.py ]; then
  "$PY" tools/apply_net.py show "$CONFIG" "$OUT/model_final.pth" "$DENSEPOSE_SYNTHETIC_ROOT/val/val_00000[1-6].*" \
    bbox,dp_segm,dp_u --min_score 0.5 --output "$OUT/vis/pred.png"
  echo "pictures: $(ls "$OUT"/vis/*.png | tr '\n' ' ')"
  echo "== 5/6 a short video over the validation images, through the same visualizers"
  "$PY" - "$DENSEPOSE_SYNTHETIC_ROOT/val" "$OUT/vis/val_clip.mp4" <<'PYEOF'
import glob, sys
import cv2
import numpy as np
files = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:30]
W, H = 256, 192  # frames of one size: each image letterboxed into it
writer = cv2.VideoWriter(sys.argv[2], cv2.VideoWriter_fourcc(*"mp4v"), 4, (W, H))
for f in files:
    im = cv2.imread(f)
    s = min(W / im.shape[1], H / im.shape[0])
    im = cv2.resize(im, (int(im.shape[1] * s), int(im.shape[0] * s)))
    frame = np.zeros((H, W, 3), np.uint8)
    frame[: im.shape[0], : im.shape[1]] = im
    writer.write(frame)
writer.release()
print(f"{len(files)} frames -> {sys.argv[2]}")
PYEOF
  "$PY" tools/apply_net.py show "$CONFIG" "$OUT/model_final.pth" "$OUT/vis/val_clip.mp4" \
    bbox,dp_contour --min_score 0.5 --output "$OUT/vis/pred_clip.mp4"
  echo "video: $OUT/vis/pred_clip.mp4"
else
  echo "tools/apply_net.py is not there: no pictures"
fi

echo "== 6/6 deployment: int8 ONNX (post-training quantization on 16 training images), scored and drawn by ONNX Runtime"
"$PY" tools/export_model.py --config-file "$CONFIG" --format onnx --output "$OUT/onnx_int8" --int8 \
  --sample-image "$DENSEPOSE_SYNTHETIC_ROOT/val/val_000001.jpg" --calib-images "$DENSEPOSE_SYNTHETIC_ROOT/train" \
  --calib-count 16 MODEL.WEIGHTS "$OUT/model_final.pth"
"$PY" tools/train_net.py --config-file "$OUT/onnx_int8/config.yaml" --eval-only --runtime onnxruntime \
  MODEL.WEIGHTS "$OUT/onnx_int8/model_int8.onnx" OUTPUT_DIR "$OUT/onnx_int8/eval"
"$PY" tools/apply_net.py show "$OUT/onnx_int8/config.yaml" "$OUT/onnx_int8/model_int8.onnx" \
  "$DENSEPOSE_SYNTHETIC_ROOT/val/val_000001.jpg" bbox,dp_contour --runtime onnxruntime --min_score 0.5 \
  --output "$OUT/vis/pred_int8_onnx.png"
echo "done: model $OUT/model_final.pth, metrics $OUT/metrics.json, evaluation $OUT/eval/eval_results.json,"
echo "      int8 ONNX $OUT/onnx_int8/model_int8.onnx (evaluation $OUT/onnx_int8/eval/eval_results.json)"
