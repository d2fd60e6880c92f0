#!/usr/bin/env bash
# The README's demo on a fresh machine (CPU is enough): set up .venv, generate the embedded synthetic
# DensePose set (demo layout: 320-384 px images, 1-3 people, cluttered backgrounds, 1000 points per
# person), train Mobile Parsing R-CNN B on it from random init (evaluated on the validation set a few
# times on the way, for the learning curve), export it to int8 ONNX and score it with ONNX Runtime, then
# draw ground truth beside predictions (PyTorch and int8 ONNX), the learning curve and a short video,
# and print where they are and the int8 model's FPS.
#
#   bash scripts/demo.sh                 # everything under output/demo
# Environment knobs:
#   DEMO_OUTPUT=dir        where the model, logs, metrics and pictures go (default output/demo)
#   DENSEPOSE_SYNTHETIC_ROOT=dir   the synthetic set (default datasets/synthetic_demo; generated if missing)
#   DEMO_NUM_PROCS=N       training processes (default 2: one per core of a 2-core CPU, gloo DDP)
#   DEMO_MAX_ITER=N        training iterations (default: the config's, 1400); the LR decay follows (at 64/70), the
#                          evaluations come every ~N/4 iterations (a multiple of the 20-iteration log period)
#   DEMO_INT8_EVAL=0       skip the int8 ONNX evaluation (its picture, video and FPS are still made)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup_env.sh
PY=.venv/bin/python
CONFIG=configs/synthetic/mobile_parsing_rcnn_b_demo.yaml
OUT=${DEMO_OUTPUT:-output/demo}
export DENSEPOSE_SYNTHETIC_ROOT=${DENSEPOSE_SYNTHETIC_ROOT:-datasets/synthetic_demo}
NPROC=${DEMO_NUM_PROCS:-2}
EXTRA=()
if [ -n "${DEMO_MAX_ITER:-}" ]; then
  EXTRA+=(SOLVER.MAX_ITER "$DEMO_MAX_ITER" SOLVER.STEPS "($((DEMO_MAX_ITER * 64 / 70)),)"
          TEST.EVAL_PERIOD "$(( (DEMO_MAX_ITER / 80 > 0 ? DEMO_MAX_ITER / 80 : 1) * 20 ))")
fi
t0=$(date +%s)
stamp() { echo "   [$(( $(date +%s) - t0 )) s since the start]"; }

echo "== 1/5 synthetic dataset in $DENSEPOSE_SYNTHETIC_ROOT (densepose_fnl.data.synthetic.DEMO_PRESET; kept if already there)"
"$PY" -c "from densepose_fnl.data.synthetic import DEMO_PRESET, ensure_synthetic_dataset as e; print(e('$DENSEPOSE_SYNTHETIC_ROOT', workers=2, **DEMO_PRESET))"
stamp

echo "== 2/5 training B from random init on CPU ($NPROC processes), evaluated on densepose_synthetic_val on the way -> $OUT"
rm -f "$OUT/metrics.json" "$OUT/last_checkpoint"
start=$(date +%s)
"$PY" tools/train_net.py --config-file "$CONFIG" --num-gpus "$NPROC" --dist-url auto OUTPUT_DIR "$OUT" "${EXTRA[@]}"
echo "training (with its evaluations) took $(( $(date +%s) - start )) s; losses and AP in $OUT/metrics.json"
stamp

echo "== 3/5 deployment: int8 ONNX (post-training quantization on 16 training images)"
"$PY" tools/export_model.py --config-file "$CONFIG" --format onnx --output "$OUT/onnx_int8" --int8 \
  --sample-image "$DENSEPOSE_SYNTHETIC_ROOT/val/val_000001.jpg" --calib-images "$DENSEPOSE_SYNTHETIC_ROOT/train" \
  --calib-count 16 MODEL.WEIGHTS "$OUT/model_final.pth"
stamp

ONNX_EVAL=()
if [ "${DEMO_INT8_EVAL:-1}" != "0" ]; then
  echo "== 4/5 the int8 ONNX model scored by ONNX Runtime on densepose_synthetic_val"
  "$PY" tools/train_net.py --config-file "$OUT/onnx_int8/config.yaml" --eval-only --runtime onnxruntime \
    MODEL.WEIGHTS "$OUT/onnx_int8/model_int8.onnx" OUTPUT_DIR "$OUT/onnx_int8/eval"
  ONNX_EVAL=(--onnx-eval-results "$OUT/onnx_int8/eval/eval_results.json")
  stamp
else
  echo "== 4/5 (int8 ONNX evaluation skipped: DEMO_INT8_EVAL=0)"
fi

echo "== 5/5 pictures: ground truth | prediction, PyTorch | int8 ONNX, learning curve, video, int8 FPS"
"$PY" tools/demo_report.py --config-file "$CONFIG" --weights "$OUT/model_final.pth" \
  --dataset-root "$DENSEPOSE_SYNTHETIC_ROOT" --output "$OUT/vis" \
  --onnx-config "$OUT/onnx_int8/config.yaml" --onnx-model "$OUT/onnx_int8/model_int8.onnx" \
  --metrics "$OUT/metrics.json" "${ONNX_EVAL[@]}" --readme-figure "$OUT/vis/readme_figure.png"
echo "done in $(( $(date +%s) - t0 )) s: model $OUT/model_final.pth, metrics $OUT/metrics.json, log $OUT/log.txt,"
echo "      int8 ONNX $OUT/onnx_int8/model_int8.onnx, pictures and summary in $OUT/vis/"
