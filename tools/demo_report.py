#!/usr/bin/env python3
"""The last step of scripts/demo.sh: pictures, learning curve, int8 ONNX comparison, video and FPS.

    tools/demo_report.py --config-file CONFIG --weights OUT/model_final.pth --dataset-root datasets/synthetic_demo
        --output OUT/vis [--onnx-config OUT/onnx_int8/config.yaml --onnx-model OUT/onnx_int8/model_int8.onnx]
        [--metrics OUT/metrics.json] [--eval-results OUT/eval_results.json]
        [--onnx-eval-results OUT/onnx_int8/eval/eval_results.json] [--readme-figure FILE] [KEY VALUE ...]

See `densepose_fnl.demo.write_demo_report` for what is written; the closing lines (where the pictures
are, AP, int8 FPS) are printed and the summary is OUT/vis/summary.json.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="the PyTorch checkpoint")
    p.add_argument("--dataset-root", required=True, help="the synthetic set (its val split is drawn)")
    p.add_argument("--output", required=True, help="folder of the pictures")
    p.add_argument("--onnx-config", default=None, help="the export's config.yaml")
    p.add_argument("--onnx-model", default=None, help="the exported (int8) ONNX model")
    p.add_argument("--metrics", default=None, help="the training's metrics.json (learning curve)")
    p.add_argument("--eval-results", default=None, help="eval_results.json of the PyTorch model")
    p.add_argument("--onnx-eval-results", default=None, help="eval_results.json of the ONNX model")
    p.add_argument("--readme-figure", default=None, help="also write a small PNG for the README here")
    p.add_argument("--num-images", type=int, default=6, help="GT | prediction pictures (default 6)")
    p.add_argument("--video-frames", type=int, default=30, help="validation images in the video (default 30)")
    p.add_argument("--min-score", type=float, default=0.5, help="detections drawn (default score >= 0.5)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.num_images < 1 or args.video_frames < 1:
        p.error("--num-images and --video-frames must be >= 1")
    if bool(args.onnx_model) != bool(args.onnx_config):
        p.error("--onnx-model and --onnx-config go together")
    for path in (args.weights, args.config_file, args.onnx_model, args.onnx_config):
        if path and not os.path.isfile(path):
            p.error(f"{path}: file not found")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from densepose_fnl.demo import format_summary, write_demo_report

    summary = write_demo_report(
        args.config_file, args.weights, args.dataset_root, args.output, onnx_config=args.onnx_config,
        onnx_model=args.onnx_model, eval_results=args.eval_results, onnx_eval_results=args.onnx_eval_results,
        metrics=args.metrics, image_ids=tuple(range(1, args.num_images + 1)), video_frames=args.video_frames,
        min_score=args.min_score, readme_figure=args.readme_figure, opts=args.opts,
    )  # fmt: skip
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
