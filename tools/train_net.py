#!/usr/bin/env python3
"""Train or evaluate a DensePose model (detectron2's tools/train_net.py).

    tools/train_net.py --config-file CONFIG [--resume] [--num-gpus N] [--qat] [KEY VALUE ...]
    tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth [KEY VALUE ...]
    tools/train_net.py --config-file CONFIG --eval-only --runtime onnxruntime MODEL.WEIGHTS model.onnx [KEY VALUE ...]

Training writes to OUTPUT_DIR: log.txt, config.yaml, metrics.json (one JSON line per log period),
TensorBoard events, model_NNNNNNN.pth every SOLVER.CHECKPOINT_PERIOD iterations, model_final.pth, and
evaluation results on DATASETS.TEST (every TEST.EVAL_PERIOD iterations and at the end).
--resume continues from OUTPUT_DIR/last_checkpoint (same iteration, LR, weights, optimizer state).
--num-gpus N: N processes per machine (one per GPU with CUDA and MODEL.DEVICE cuda; gloo CPU processes
otherwise); --num-machines / --machine-rank / --dist-url for several machines.
--qat: wraps the float model (MODEL.WEIGHTS loaded first) with densepose_fnl.quantization.build_qat_model.
--eval-only writes the tables to the log and OUTPUT_DIR/eval_results.json.
--runtime onnxruntime (with --eval-only only, one process, no --qat / --resume): MODEL.WEIGHTS is an ONNX
file written by tools/export_model.py (fp32 or int8), evaluated with ONNX Runtime on DATASETS.TEST through
the same loader, evaluator and tables as a checkpoint (`densepose_fnl.export.OrtModel`), so its box /
DensePose AP compare directly with the PyTorch model's. Use the export's config (its config.yaml): the
test loader resizes with its INPUT.*, while the score threshold, NMS and detection cap are those baked
into the graph at export time (overriding them here has no effect).
Exit codes: 0 success, 2 bad command line / config / model file (or --qat without
densepose_fnl.quantization).
"""
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("densepose_fnl.train")


class ModelFileError(Exception):
    """MODEL.WEIGHTS cannot be evaluated by --runtime onnxruntime; the message is the one-line report."""


def setup(args):
    from densepose_fnl.checkpoint import trust_checkpoints
    from densepose_fnl.config import load_config
    from densepose_fnl.engine import default_setup

    trust_checkpoints(args.trust_checkpoint)
    cfg = load_config(args.config_file, args.opts or [])
    cfg.DATASETS.REGISTER = tuple(cfg.DATASETS.REGISTER) + tuple(args.dataset)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def build_eval_model(cfg, args):
    """The model --eval-only scores: the ONNX file run by ONNX Runtime, or the (QAT) checkpoint."""
    from densepose_fnl.checkpoint import DensePoseCheckpointer
    from densepose_fnl.engine import build_qat
    from densepose_fnl.modeling import build_model

    if args.runtime == "onnxruntime":
        from densepose_fnl.export import OrtModel, OrtModelError

        try:
            return OrtModel(cfg.MODEL.WEIGHTS, cfg)
        except OrtModelError as e:  # a checkpoint, not ONNX, or not a densepose_fnl export
            raise ModelFileError(str(e)) from e
    model = build_model(cfg)
    if args.qat:
        model = build_qat(cfg, model)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("--eval-only without MODEL.WEIGHTS: evaluating a randomly initialised model")
    DensePoseCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
    return model


def main(args):
    from densepose_fnl.checkpoint import DensePoseCheckpointer
    from densepose_fnl.engine import DefaultTrainer, build_qat, comm, print_results_tables
    from densepose_fnl.evaluation.testing import verify_results
    from densepose_fnl.modeling import build_model

    cfg = setup(args)
    if args.eval_only:
        results = DefaultTrainer.test(cfg, build_eval_model(cfg, args))
        if comm.is_main_process():
            print_results_tables(results)
            if cfg.OUTPUT_DIR:
                with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                    json.dump(results, f, indent=1)
            if not verify_results(cfg, results):  # TEST.EXPECTED_RESULTS, as detectron2's train_net
                sys.exit(1)
        return results

    model = build_model(cfg)
    if args.qat:
        if cfg.MODEL.WEIGHTS:
            DensePoseCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        model = build_qat(cfg, model)
    trainer = DefaultTrainer(cfg, model=model, log_period=args.log_period)
    # QAT: MODEL.WEIGHTS are float weights, already loaded before wrapping; only a QAT checkpoint resumes
    trainer.resume_or_load(resume=args.resume, load_weights=not args.qat)
    results = trainer.train()
    if comm.is_main_process() and results:
        print_results_tables(results)
    return results


def _use_cuda(args) -> bool:
    import torch

    from densepose_fnl.config import load_config

    if not torch.cuda.is_available():
        return False
    cfg = load_config(args.config_file, args.opts or [])
    return str(cfg.MODEL.DEVICE).startswith("cuda")


def runtime_problem(args):
    """Why the command line cannot use --runtime onnxruntime (an exported graph can only be evaluated, in
    one process: it has no gradients, no QAT wrapper, no PyTorch checkpoint to resume), or None."""
    if args.runtime != "onnxruntime":
        return None
    if not args.eval_only:
        return "--runtime onnxruntime evaluates an exported model: it needs --eval-only"
    if args.qat or args.resume:
        return f"--runtime onnxruntime cannot be combined with {'--qat' if args.qat else '--resume'}"
    if args.num_gpus * args.num_machines > 1:
        return "--runtime onnxruntime runs in one process: drop --num-gpus / --num-machines"
    return None


def weights_problem(cfg, args):
    """Why MODEL.WEIGHTS does not suit --runtime (before any process starts), or None; the file's
    contents are checked when OrtModel opens it."""
    weights = cfg.MODEL.WEIGHTS
    if args.runtime == "onnxruntime":
        if not weights:
            return "--runtime onnxruntime needs MODEL.WEIGHTS model.onnx (written by tools/export_model.py)"
        return None if os.path.isfile(weights) else f"{weights}: model file not found"
    if weights.lower().endswith(".onnx"):
        return f"{weights}: an ONNX file; use --runtime onnxruntime (with --eval-only)"
    if weights and not args.resume:  # read it once now: a missing / torn / code-carrying file is one line
        from densepose_fnl.checkpoint import CheckpointLoadError
        from densepose_fnl.checkpoint.formats import load_checkpoint_file

        try:
            load_checkpoint_file(weights, trusted=args.trust_checkpoint)
        except FileNotFoundError:
            return f"{weights}: checkpoint not found"
        except CheckpointLoadError as e:
            return str(e)
    return None


def cfg_weights(args) -> str:
    from densepose_fnl.config import load_config

    return load_config(args.config_file, args.opts or []).MODEL.WEIGHTS


def cli(argv=None) -> int:
    from densepose_fnl.config import ConfigError
    from densepose_fnl.checkpoint import CheckpointMismatchError
    from densepose_fnl.engine import QATUnavailableError, default_argument_parser, launch

    parser = default_argument_parser()
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required")
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    problem = runtime_problem(args)
    if problem:
        print(f"train_net.py: error: {problem}", file=sys.stderr)
        return 2
    try:
        use_cuda = _use_cuda(args) if args.num_gpus * args.num_machines > 1 else None
        # validate the config (file, keys, values) and the weights file before starting any process
        from densepose_fnl.config import load_config

        problem = weights_problem(load_config(args.config_file, args.opts or []), args)
        if problem:
            print(f"train_net.py: error: {problem}", file=sys.stderr)
            return 2
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,), use_cuda=use_cuda)
    except ConfigError as e:
        print(f"train_net.py: config error: {e}", file=sys.stderr)
        return 2
    except QATUnavailableError as e:
        print(f"train_net.py: {e}", file=sys.stderr)
        return 2
    except ModelFileError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        return 2
    except CheckpointMismatchError as e:  # the weights do not fit the config's model
        print(f"train_net.py: error: {cfg_weights(args)}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
