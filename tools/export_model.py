#!/usr/bin/env python3
"""Export a DensePose model to ONNX (float32 or int8), one self-contained file with dynamic H / W.

    tools/export_model.py --config-file C --format onnx --output DIR [--int8] [--sample-image IMG]
                          [--calib-images GLOB_OR_DIR] [--calib-count N] [--no-verify] [--no-ort-rewrites]
                          [--ort-format] [KEY VALUE ...]

MODEL.WEIGHTS: a float checkpoint, or (with --int8) a QAT checkpoint written by `train_net.py --qat`
(detected by its keys): QAT weights are converted as trained; float weights are quantized post-training
(PTQ) with --calib-images (else the sample image; else random pixels, with a warning).
Without MODEL.WEIGHTS the model is randomly initialised and its BN statistics are calibrated on the
calibration / sample images (a raw random init gives no detections).

Writes DIR/model.onnx (float32) or DIR/model_int8.onnx, and DIR/config.yaml (use it with
`densepose_fnl.export.OrtPredictor` / `apply_net.py --runtime onnxruntime`). Graph: input `image`
(1, 3, H, W) uint8 in INPUT.FORMAT, already resized (shortest edge), H, W >= 65; outputs boxes, scores,
classes, coarse_segm, fine_segm, u, v (then, for chart-confidence models, their confidence maps: see
`densepose_fnl.export.tensor_model`) in input pixels; a CSE model (DensePoseEmbeddingPredictor) outputs
boxes, scores, classes, embedding, coarse_segm and its mesh vertex embeddings are written beside the graph as
DIR/model[_int8].vertex_embeddings.npz (ship it with the graph: docs/DEPLOYMENT.md). Unless --no-verify,
ONNX Runtime is run on the sample image and compared with PyTorch (float: same detections; int8: reported
only; CSE: also the mesh vertex maps, by the export's vertex embeddings). The graph is rewritten for ONNX
Runtime's kernels (same outputs; docs/DEPLOYMENT.md) unless --no-ort-rewrites.
--ort-format also writes the ONNX Runtime Mobile files beside the .onnx: DIR/model[_int8].ort (ORT format,
optimised for ARM CPUs) and DIR/model[_int8].required_operators_and_types.config (the operators and types
of a reduced ONNX Runtime build), and, unless --no-verify, runs the .ort against the .onnx on the sample
image (`densepose_fnl.export.ort_mobile`; docs/DEPLOYMENT.md "On a phone").
Exit codes: 0 success, 2 bad command line / config / files.
"""
import argparse
import glob
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("densepose_fnl.export")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--int8", action="store_true", help="int8 (QAT checkpoint converted, or PTQ of a float one)")
    p.add_argument("--sample-image", default="", help="image used for tracing / verification (any size)")
    p.add_argument("--calib-images", default="", help="glob or directory of images for PTQ / BN calibration")
    p.add_argument("--calib-count", type=int, default=16)
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints that carry pickled code (objects beyond tensors / numbers / strings): only for files you trust")
    p.add_argument("--no-ort-rewrites", action="store_true",
                   help="skip the graph rewrites for ONNX Runtime's kernels (same outputs; for comparisons)")
    p.add_argument("--ort-format", action="store_true",
                   help="also write the ONNX Runtime Mobile files: <model>.ort and "
                        "<model>.required_operators_and_types.config (for a reduced-operator build)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _image_list(pattern, limit):
    if not pattern:
        return []
    if os.path.isdir(pattern):
        files = sorted(f for ext in ("jpg", "jpeg", "png", "bmp") for f in glob.glob(os.path.join(pattern, f"*.{ext}")))
    else:
        files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"--calib-images matched no image: {pattern}")
    return files[:limit]


def main(argv=None) -> int:
    args = parse_args(argv)
    from densepose_fnl.checkpoint import trust_checkpoints

    trust_checkpoints(args.trust_checkpoint)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    import numpy as np
    import torch

    from densepose_fnl.config import ConfigError, load_config
    from densepose_fnl.data.preprocess import preprocess_for_test
    from densepose_fnl.data.image_io import ImageReadError, read_image
    from densepose_fnl.export import OrtPredictor, build_export_model, export_onnx, write_ort_mobile_files
    from densepose_fnl.export.tensor_model import is_cse_model
    from densepose_fnl.export.vertex_embeddings import vertex_embeddings_path

    try:
        cfg = load_config(args.config_file, args.opts)
        cfg.MODEL.DEVICE = "cpu"
        calib_files = _image_list(args.calib_images, args.calib_count)
        if args.sample_image and not os.path.isfile(args.sample_image):
            raise FileNotFoundError(f"--sample-image not found: {args.sample_image}")
        sample_bgr = read_image(args.sample_image) if args.sample_image else None
        images = [read_image(f) for f in calib_files] or ([sample_bgr] if sample_bgr is not None else [])
    except (ConfigError, FileNotFoundError, ImageReadError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # before minutes of work: an unusable --output fails now
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        print(f"error: --output {args.output}: cannot create the directory ({e.strerror or e})", file=sys.stderr)
        return 2

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not images:
        logger.warning("No --calib-images / --sample-image: calibrating on random pixels (fine for a smoke "
                       "export, not for accuracy)")
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    # network inputs as every predictor makes them (resize to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST)
    calib_inputs = [[preprocess_for_test(im, cfg)] for im in images]
    if sample_bgr is None:
        sample_bgr = images[0]
    sample = preprocess_for_test(sample_bgr, cfg)

    try:
        model, kind = build_export_model(cfg, args.int8, calib_inputs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = os.path.join(args.output, "model_int8.onnx" if args.int8 else "model.onnx")
    t0 = time.time()
    try:
        export_onnx(model, path, sample_image=sample["image"][None], opset=args.opset,
                    metadata={"densepose_fnl.kind": kind, "densepose_fnl.input_format": cfg.INPUT.FORMAT},
                    ort_rewrites=not args.no_ort_rewrites,
                    class_to_mesh_name=cfg.DATASETS.CLASS_TO_MESH_NAME_MAPPING or None)
    except ValueError as e:  # a CSE model whose class -> mesh mapping does not fit its embedder
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(args.output, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    print(f"wrote {path} ({kind}, {os.path.getsize(path) / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    if is_cse_model(model):
        npz = vertex_embeddings_path(path)
        print(f"wrote {npz} (CSE vertex embeddings, {os.path.getsize(npz) / 1e6:.2f} MB; ship it with the graph)")
    mobile = None
    if args.ort_format:
        mobile = write_ort_mobile_files(path)
        print(f"wrote {mobile.ort_path} ({os.path.getsize(mobile.ort_path) / 1e6:.2f} MB) and {mobile.config_path}")

    if not args.no_verify:
        from densepose_fnl.export.compare import compare_instances

        with torch.no_grad():
            ref = model([sample])[0]["instances"]
        ort_predictor = OrtPredictor(path, cfg)
        out = ort_predictor(sample_bgr)["instances"]
        # CSE: vertex maps of both on the same boxes, by the export's own vertex embeddings
        report = compare_instances(ref, out, cse=ort_predictor.cse_converter() if ort_predictor.is_cse else None)
        print("verify (ONNX Runtime vs PyTorch):", report.summary())
        if not args.int8 and not report.ok():
            print("error: ONNX Runtime output differs from PyTorch", file=sys.stderr)
            return 1
        if mobile is not None:
            from densepose_fnl.export import ort_format_differences

            try:
                diffs = ort_format_differences(path, mobile.ort_path, sample["image"][None].numpy())
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print("verify (.ort vs .onnx, ONNX Runtime): max |diff| "
                  + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()) + " -> OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
