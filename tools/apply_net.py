#!/usr/bin/env python3
"""Apply Net: run DensePose on images, folders, globs or videos; dump the results or draw them.

    apply_net.py dump CONFIG MODEL INPUT [--output results.pkl] [--iuv-dir DIR] [options] [KEY VALUE ...]
    apply_net.py show CONFIG MODEL INPUT VISUALIZATIONS [--output out.png] [options] [KEY VALUE ...]
    apply_net.py {dump,show} CONFIG model.onnx ... --runtime onnxruntime   (an exported model)

Same verbs and options as detectron2's DensePose `apply_net.py` where they exist. INPUT is an image
file, a folder (its files, sorted), a glob ("photos/*.jpg", quoted) or a video file (read with OpenCV,
processed frame by frame). Config overrides: `--opts KEY VALUE ...` or plain trailing KEY VALUE pairs.
Common options: `--min_score S` (detections below S are dropped; sets
MODEL.ROI_HEADS.SCORE_THRESH_TEST; default 0.8 for show, the config's value for dump), `--nms_thresh T`,
`--device cpu|cuda`, `-v` / `-vv` (log more).

`--runtime pytorch` (default): MODEL is a checkpoint (.pth / .pkl; "" = random init) run by
DefaultPredictor. `--runtime onnxruntime`: MODEL is an ONNX file written by tools/export_model.py, run
by `densepose_fnl.export.OrtPredictor` on the CPU; CONFIG should be the export's config (its
config.yaml): INPUT.* still resizes the images outside the graph, but SCORE_THRESH_TEST, the NMS
thresholds, the RPN top-k and TEST.DETECTIONS_PER_IMAGE were baked into the graph at export time, so
`--nms_thresh` and such overrides have no effect there (a warning says so; export again to change
them), while `--min_score` still drops the detections below it. Everything else is the same. MODEL may
also be the export's ORT format file (.ort, `export_model.py --ort-format`). `--ort-provider NAME` (with
--runtime onnxruntime) picks the ONNX Runtime execution provider (e.g. XNNPACK where the installed
onnxruntime has it; default CPU); one that is not available is a one-line error listing the available ones.

show: VISUALIZATIONS is a comma-separated list of bbox, dp_segm, dp_u, dp_v, dp_contour,
dp_iuv_texture (needs `--texture_atlas FILE`, a 4 x 6 tile atlas such as DensePose's
texture_from_SURREAL.png), dp_uv_confidence (models with UV confidences, e.g. B-WC2M: the per-pixel UV
standard deviation as a heat map over each person, with a colour bar; see densepose_fnl.vis.uv_confidence),
dp_vertex (CSE models: each pixel's closest mesh vertex coloured as detectron2's dp_vertex; SMPL reads
detectron2's mds_d=256.npy from the mesh data directory), dp_cse_texture (CSE models: needs
`--texture_atlases_map '{"<mesh name>": "<texture image>"}'`, looked up at the mesh's texcoords),
drawn left to right on the grey picture (`--background color` keeps the
colours). One input: written to `--output` exactly (default outputres.png); several inputs: one file
per input named `<output stem>.<NNNN><ext>` (NNNN = the input's 1-based position). A video input is
written as an MP4 (mp4v) with the same frame count and frame rate (`.mp4` replaces an image extension).

dump: `--output FILE` (default results.pkl) is written with `torch.save`: a list with one dict of plain
tensors per image (per frame for videos): file_name, [frame_index,] image_size, scores, pred_boxes_XYXY and
pred_densepose (per person: labels, uv [, confidences]; CSE models: mesh_name, vertices, embedding,
coarse_segm [, labels, uv]); the format is documented in
`densepose_fnl.postprocess.dump` (read it with `torch.load(path, weights_only=True)` or `load_dump`).
`--iuv-dir DIR` also writes `<stem>_IUV.png` and `<stem>_INDS.png` per image (`<stem>_<frame:06d>_...`
per video frame) in the original DensePose (Detectron1 infer_simple) convention, see
`densepose_fnl.postprocess.iuv` (all kept detections are drawn; INDS = rank in ascending score order
+ `--iuv-index-offset`, so by default the lowest-scoring person is 0 there).

CSE models (DensePoseEmbeddingPredictor): each person's closest mesh vertex per pixel comes from the model's
vertex embeddings (`densepose_fnl.postprocess.cse`); for SMPL (smpl_27554) the vertices become chart
I, U, V through the official SMPL_subdiv.mat / SMPL_SUBDIV_TRANSFORM.mat of DENSEPOSE_EVALUATION.EVAL_DATA_DIR
($DENSEPOSE_EVAL_DATA), so `--iuv-dir` and the chart visualizers work too (a missing file is a one-line
error naming it; a plain dump then just has no labels / uv).

A bad input (missing file, unreadable or corrupt image, unreadable video, unsupported extension) is
reported on one line ("apply_net: error: <path>: <reason>") and skipped; the others are processed.
A model that cannot be used is one line too ("apply_net: error: <model>: <reason>"): missing file,
a .onnx file without `--runtime onnxruntime`, a PyTorch checkpoint / non-ONNX file / ONNX file that is
not a densepose_fnl export with it.
Exit code: 0 if everything was processed, 1 if anything failed (2 for command-line usage errors).
"""
import argparse
import glob
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

try:
    import densepose_fnl  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from densepose_fnl.config import ConfigError, load_config  # noqa: E402
from densepose_fnl.data.image_io import ImageReadError, read_image  # noqa: E402
from densepose_fnl.postprocess.cse import CseResultsConverter, is_cse_config, predictor_vertex_embeddings  # noqa: E402
from densepose_fnl.postprocess.dump import dump_entry, extract_results, save_dump  # noqa: E402
from densepose_fnl.postprocess.iuv import compose_iuv_image, write_iuv_images  # noqa: E402
from densepose_fnl.vis import VISUALIZERS, build_visualizer, load_texture_atlas, load_texture_atlases  # noqa: E402

logger = logging.getLogger("apply_net")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
RUNTIMES = ("pytorch", "onnxruntime")
# fixed inside an exported graph: overriding them at run time changes nothing (see export/tensor_model.py)
BAKED_INTO_ONNX = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "MODEL.RPN.NMS_THRESH",
                   "MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST", "TEST.DETECTIONS_PER_IMAGE")


class InputError(Exception):
    """A bad input: reported on one line, then the next input is processed."""


class ModelFileError(Exception):
    """<model> cannot be run by the chosen runtime; the message ("<model>: <reason>") is the whole report."""


def report(path: str, reason: str) -> None:
    tqdm.write(f"apply_net: error: {path}: {reason}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- inputs
def list_inputs(spec: str) -> Tuple[List[str], Optional[str]]:
    """INPUT -> (paths, error message if nothing usable was named)."""
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if not os.path.isdir(os.path.join(spec, n)))
        if not names:
            return [], "folder has no files"
        return [os.path.join(spec, n) for n in names], None
    if os.path.isfile(spec):
        return [spec], None
    if glob.has_magic(spec):
        paths = sorted(p for p in glob.glob(spec) if not os.path.isdir(p))
        return paths, (None if paths else "no file matches this pattern")
    return [], "no such file or directory"


def input_kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return "unsupported"


def read_bgr_image(path: str) -> np.ndarray:
    try:
        return read_image(path, "BGR")
    except FileNotFoundError as e:
        raise InputError("no such file") from e
    except ImageReadError as e:
        raise InputError("cannot read image (corrupt or not an image)") from e


def open_video(path: str):
    if not os.path.isfile(path):
        raise InputError("no such file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise InputError("cannot open video")
    return cap


# ---------------------------------------------------------------------------------------------- model
def default_predictor_factory(cfg):
    try:
        from densepose_fnl.engine.predictor import DefaultPredictor
    except ImportError as e:
        raise RuntimeError(f"the predictor is not available (densepose_fnl.engine.predictor): {e}") from e
    return DefaultPredictor(cfg)


def ort_predictor_factory(cfg, provider: Optional[str] = None):
    """OrtPredictor over MODEL.WEIGHTS (the .onnx / .ort file); a file it cannot run is a ModelFileError."""
    from densepose_fnl.export.ort_model import OrtModelError, open_ort_predictor

    try:
        return open_ort_predictor(cfg.MODEL.WEIGHTS, cfg, provider=provider)
    except OrtModelError as e:
        raise ModelFileError(str(e)) from e


PREDICTOR_FACTORIES = {"pytorch": default_predictor_factory, "onnxruntime": ort_predictor_factory}


def model_file_problem(model: str, runtime: str) -> Optional[str]:
    """Why <model> cannot be run by `runtime` ("<model>: <reason>"), or None. Checked before building
    the predictor so a wrong file costs no model construction and gives no traceback."""
    if runtime == "onnxruntime":
        return None  # open_ort_predictor tells every case (missing, checkpoint, not ONNX, not our export)
    if model and "://" not in model and not os.path.exists(model):
        return f"{model}: model file not found"
    if model.lower().endswith(".onnx"):
        return f"{model}: an ONNX file; use --runtime onnxruntime"
    return None


def warn_baked_options(args) -> None:
    """With onnxruntime, say which options cannot act (instead of silently ignoring them)."""
    keys = [k for k in args.opts[0::2] if k in BAKED_INTO_ONNX]
    if args.nms_thresh is not None:
        keys.insert(0, "--nms_thresh")
    if keys:
        print(f"apply_net: warning: {', '.join(keys)}: no effect with --runtime onnxruntime (baked into the "
              "ONNX graph at export time; export again to change it)", file=sys.stderr)
    if args.device and not str(args.device).startswith("cpu"):
        print(f"apply_net: warning: --device {args.device}: --runtime onnxruntime runs on the CPU", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- actions
class DumpAction:
    def __init__(self, args, n_inputs: int):
        self.args = args
        self.entries: List[Dict[str, Any]] = []
        # CSE: IUV images need the vertices' charts; a plain dump adds them where available
        self.cse_charts = "required" if args.iuv_dir else "auto"

    def on_image(self, index: int, path: str, image: np.ndarray, boxes, scores, results, frame: Optional[int] = None):
        self.entries.append(dump_entry(path, image.shape[:2], boxes, scores, results, frame))
        if self.args.iuv_dir:
            iuv, inds = compose_iuv_image(
                boxes, scores, results, image.shape[:2], score_threshold=float("-inf"),
                index_offset=self.args.iuv_index_offset,
            )
            stem = os.path.splitext(os.path.basename(path))[0]
            name = stem if frame is None else f"{stem}_{frame:06d}"
            write_iuv_images(self.args.iuv_dir, name + ".png", iuv, inds)

    def start_video(self, index, path, cap) -> None:
        pass

    def end_video(self) -> None:
        pass

    def finish(self) -> None:
        save_dump(self.entries, self.args.output)
        logger.info("dump saved to %s (%d entries)", self.args.output, len(self.entries))


class ShowAction:
    def __init__(self, args, n_inputs: int):
        self.args = args
        self.n_inputs = n_inputs
        atlas = load_texture_atlas(args.texture_atlas) if args.texture_atlas else None
        self.visualizer = build_visualizer(args.visualizations, texture_atlas=atlas,
                                           uv_confidence_epsilon=getattr(args, "uv_confidence_epsilon", 0.01),
                                           texture_atlases=load_texture_atlases(args.texture_atlases_map))
        self.cse_charts = "required" if self.visualizer.needs_charts else "none"
        self.writer = None
        self.video_out = None

    def out_name(self, index: int, video: bool) -> str:
        base, ext = os.path.splitext(self.args.output)
        if video and ext.lower() not in VIDEO_EXTENSIONS:
            ext = ".mp4"
        if self.n_inputs == 1:
            return base + ext
        return f"{base}.{index + 1:04d}{ext}"

    def render(self, image, boxes, scores, results) -> np.ndarray:
        if self.args.background == "gray":
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None], 3, axis=2)
        return self.visualizer.visualize(image, boxes, results, scores)

    def on_image(self, index, path, image, boxes, scores, results, frame: Optional[int] = None):
        picture = self.render(image, boxes, scores, results)
        if frame is not None:
            if self.writer is None:
                raise InputError("video writer is not open")
            self.writer.write(picture)
            return
        out = self.out_name(index, video=False)
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        if not cv2.imwrite(out, picture):
            raise InputError(f"cannot write {out}")
        logger.info("%s -> %s", path, out)

    def start_video(self, index, path, cap) -> None:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        out = self.out_name(index, video=True)
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        self.writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self.writer.isOpened():
            self.writer = None
            raise InputError(f"cannot write video {out}")
        self.video_out = out

    def end_video(self) -> None:
        if self.writer is not None:
            self.writer.release()
            logger.info("video written to %s", self.video_out)
        self.writer = None

    def finish(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- CLI
def create_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apply_net.py", description="Apply Net - dump or visualize DensePose results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", title="actions", metavar="{dump,show}")
    sub.required = True
    dump = sub.add_parser("dump", help="Dump model outputs to a file.")
    show = sub.add_parser("show", help="Visualize selected entries")
    for p in (dump, show):
        p.add_argument("-v", "--verbosity", action="count", default=0, help="-v: info, -vv: debug")
        p.add_argument("cfg", metavar="<config>", help="Config file")
        p.add_argument("model", metavar="<model>",
                       help="Model file (sets MODEL.WEIGHTS): a checkpoint, or an .onnx with --runtime onnxruntime")
        p.add_argument("input", metavar="<input>", help="Image, folder, glob pattern or video")
        p.add_argument("--trust-checkpoint", action="store_true",
                       help="load checkpoints that carry pickled code (objects beyond tensors / numbers / strings): only for files you trust")
    show.add_argument(
        "visualizations", metavar="<visualizations>",
        help=f"Comma separated list of visualizations, possible values: [{','.join(sorted(VISUALIZERS))}]",
    )
    dump.add_argument("--output", metavar="<dump_file>", default="results.pkl", help="File name to save dump to")
    dump.add_argument("--iuv-dir", "--iuv_dir", dest="iuv_dir", metavar="<dir>", default=None,
                      help="Also write <name>_IUV.png and <name>_INDS.png (Detectron1 convention) here")
    dump.add_argument("--iuv-index-offset", "--iuv_index_offset", dest="iuv_index_offset", type=int, default=0,
                      help="Added to the INDS rank (0 = Detectron1: the lowest-scoring person is 0)")
    dump.add_argument("--min_score", metavar="<score>", default=None, type=float,
                      help="Minimum detection score (default: the config's SCORE_THRESH_TEST)")
    show.add_argument("--output", metavar="<image_file>", default="outputres.png", help="File name to save output to")
    show.add_argument("--min_score", metavar="<score>", default=0.8, type=float, help="Minimum detection score to visualize")
    show.add_argument("--texture_atlas", metavar="<texture_atlas>", default=None,
                      help="Texture atlas file (for IUV texture transfer)")
    show.add_argument("--texture_atlases_map", metavar="<texture_atlases_map>", default=None,
                      help='JSON string of a dict containing texture atlas files for each mesh (dp_cse_texture), '
                           'e.g. \'{"smpl_27554": "smpl_uvSnapshot_colors.jpg"}\'')
    show.add_argument("--background", choices=["gray", "color"], default="gray",
                      help="Draw on the grey (default, as detectron2) or on the colour picture")
    for p in (dump, show):
        p.add_argument("--nms_thresh", metavar="<threshold>", default=None, type=float,
                       help="NMS threshold (pytorch only: an ONNX graph has its export-time NMS)")
        p.add_argument("--runtime", choices=RUNTIMES, default="pytorch",
                       help="pytorch (default): <model> is a checkpoint; onnxruntime: <model> is an ONNX file "
                            "from tools/export_model.py, whose score threshold, NMS and detection cap were baked "
                            "in at export time (--min_score still filters its outputs)")
        p.add_argument("--ort-provider", default=None, metavar="NAME",
                       help="with --runtime onnxruntime: ONNX Runtime execution provider (CPU by default; e.g. "
                            "XNNPACK where the installed onnxruntime has it)")
        p.add_argument("--device", default=None, help="cpu or cuda (sets MODEL.DEVICE)")
        p.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                       help="Modify config options using the command-line 'KEY VALUE' pairs")
    return parser


def setup_config(args):
    opts = list(args.opts)
    if args.min_score is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.min_score)]
    if args.nms_thresh is not None:
        opts += ["MODEL.ROI_HEADS.NMS_THRESH_TEST", str(args.nms_thresh)]
    if args.device:
        opts += ["MODEL.DEVICE", args.device]
    opts += ["MODEL.WEIGHTS", args.model]
    cfg = load_config(args.cfg, opts)
    cfg.freeze()
    return cfg


def process_input(index: int, path: str, predictor, action, min_score, cse=None) -> None:
    kind = input_kind(path)
    if kind == "unsupported":
        if not os.path.lexists(path):
            raise InputError("no such file")
        exts = ", ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
        raise InputError(f"unsupported file type '{os.path.splitext(path)[1] or '(none)'}' (supported: {exts})")
    if kind == "image":
        image = read_bgr_image(path)
        with torch.no_grad():
            instances = predictor(image)["instances"]
        action.on_image(index, path, image, *extract_results(instances, min_score, cse))
        return
    cap = open_video(path)
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        frame_idx = 0
        bar = tqdm(total=total, desc=os.path.basename(path), unit="frame", leave=False, position=1)
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if frame_idx == 0:
                    action.start_video(index, path, cap)
                with torch.no_grad():
                    instances = predictor(frame)["instances"]
                action.on_image(index, path, frame, *extract_results(instances, min_score, cse), frame=frame_idx)
                frame_idx += 1
                bar.update(1)
        finally:
            bar.close()
            action.end_video()
        if frame_idx == 0:
            raise InputError("cannot read any frame from the video (corrupt or unsupported codec)")
    finally:
        cap.release()


def main(argv: Optional[List[str]] = None, predictor_factory: Optional[Callable] = None) -> int:
    parser = create_argument_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") and not _is_number(a)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.opts = list(args.opts) + list(extra)  # trailing KEY VALUE overrides
    logging.basicConfig(format="%(name)s: %(message)s")
    logger.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbosity, 2)])
    if args.runtime == "onnxruntime":
        warn_baked_options(args)
    if args.ort_provider:
        from densepose_fnl.export import OrtProviderError, resolve_provider

        if args.runtime != "onnxruntime":
            print("apply_net: error: --ort-provider needs --runtime onnxruntime", file=sys.stderr)
            return 2
        try:  # before any work: a provider this onnxruntime lacks is a command-line problem
            resolve_provider(args.ort_provider)
        except OrtProviderError as e:
            print(f"apply_net: error: --ort-provider: {e}", file=sys.stderr)
            return 2
    from densepose_fnl.checkpoint import trust_checkpoints

    trust_checkpoints(args.trust_checkpoint)

    try:
        cfg = setup_config(args)
    except ConfigError as e:
        print(f"apply_net: error: {e}", file=sys.stderr)
        return 1
    args.uv_confidence_epsilon = float(cfg.MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.EPSILON)  # dp_uv_confidence
    paths, problem = list_inputs(args.input)
    if problem:
        report(args.input, problem)
        return 1
    try:
        action = (DumpAction if args.command == "dump" else ShowAction)(args, len(paths))
    except ValueError as e:  # unknown visualizer, unusable texture atlas (map)
        print(f"apply_net: error: {e}", file=sys.stderr)
        return 1
    problem = model_file_problem(args.model, args.runtime)
    if problem:
        print(f"apply_net: error: {problem}", file=sys.stderr)
        return 1
    try:
        if predictor_factory is None and args.runtime == "onnxruntime":
            predictor = ort_predictor_factory(cfg, provider=args.ort_provider)
        else:
            predictor = (predictor_factory or PREDICTOR_FACTORIES[args.runtime])(cfg)
    except ModelFileError as e:
        print(f"apply_net: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        logger.debug("predictor construction failed", exc_info=True)
        print(f"apply_net: error: cannot build the model from {args.cfg} and {args.model}: {e}", file=sys.stderr)
        return 1

    cse = None
    if is_cse_config(cfg):
        try:  # before any image: a missing mesh / chart file or a predictor without vertex embeddings
            cse = CseResultsConverter.from_config(cfg, predictor_vertex_embeddings(predictor), charts=action.cse_charts)
            cse.check_charts()
        except (OSError, ValueError, KeyError) as e:
            print(f"apply_net: error: {e}", file=sys.stderr)
            return 1

    min_score = args.min_score
    failed = 0
    for index, path in enumerate(tqdm(paths, desc=args.command, unit="input", position=0)):
        try:
            process_input(index, path, predictor, action, min_score, cse)
        except InputError as e:
            report(path, str(e))
            failed += 1
        except Exception as e:  # noqa: BLE001 - keep going with the other inputs
            logger.debug("failure on %s", path, exc_info=True)
            report(path, f"{type(e).__name__}: {e}")
            failed += 1
    try:
        action.finish()
    except OSError as e:
        print(f"apply_net: error: cannot write {args.output}: {e}", file=sys.stderr)
        return 1
    if failed:
        logger.warning("%d of %d inputs failed", failed, len(paths))
    return 1 if failed else 0


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
