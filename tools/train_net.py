#!/usr/bin/env python3
"""Train or evaluate a DensePose model (detectron2's tools/train_net.py).

    tools/train_net.py --config-file CONFIG [--resume] [--num-gpus N] [--qat] [KEY VALUE ...]
    tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth [KEY VALUE ...]

Training writes to OUTPUT_DIR: log.txt, config.yaml, metrics.json (one JSON line per log period),
TensorBoard events, model_NNNNNNN.pth every SOLVER.CHECKPOINT_PERIOD iterations, model_final.pth, and
evaluation results on DATASETS.TEST (every TEST.EVAL_PERIOD iterations and at the end).
--resume continues from OUTPUT_DIR/last_checkpoint (same iteration, LR, weights, optimizer state).
--num-gpus N: N processes per machine (one per GPU with CUDA and MODEL.DEVICE cuda; gloo CPU processes
otherwise); --num-machines / --machine-rank / --dist-url for several machines.
--qat: wraps the float model (MODEL.WEIGHTS loaded first) with densepose_fnl.quantization.build_qat_model.
Exit codes: 0 success, 2 bad command line / config (or --qat without densepose_fnl.quantization).
"""
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("densepose_fnl.train")


def setup(args):
    from densepose_fnl.config import load_config
    from densepose_fnl.engine import default_setup

    cfg = load_config(args.config_file, args.opts or [])
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    from densepose_fnl.checkpoint import DensePoseCheckpointer
    from densepose_fnl.engine import DefaultTrainer, build_qat, comm, print_results_tables
    from densepose_fnl.modeling import build_model

    cfg = setup(args)
    if args.eval_only:
        model = build_model(cfg)
        if args.qat:
            model = build_qat(cfg, model)
        if not cfg.MODEL.WEIGHTS:
            logger.warning("--eval-only without MODEL.WEIGHTS: evaluating a randomly initialised model")
        DensePoseCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process():
            print_results_tables(results)
            if cfg.OUTPUT_DIR:
                with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                    json.dump(results, f, indent=1)
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


def cli(argv=None) -> int:
    from densepose_fnl.config import ConfigError
    from densepose_fnl.engine import QATUnavailableError, default_argument_parser, launch

    parser = default_argument_parser()
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required")
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    try:
        use_cuda = _use_cuda(args) if args.num_gpus * args.num_machines > 1 else None
        # validate the config (file, keys, values) before starting any process
        from densepose_fnl.config import load_config

        load_config(args.config_file, args.opts or [])
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,), use_cuda=use_cuda)
    except ConfigError as e:
        print(f"train_net.py: config error: {e}", file=sys.stderr)
        return 2
    except QATUnavailableError as e:
        print(f"train_net.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
