"""Command line and process setup of the tools (detectron2's engine/defaults.py helpers): the argument
parser of train_net, logging to the console and OUTPUT_DIR/log.txt, config.yaml, seeding."""
import argparse
import logging
import os
import random
import sys
from typing import Optional

import numpy as np
import torch

from ..utils import comm

logger = logging.getLogger("densepose_fnl.train")

__all__ = ["default_argument_parser", "default_setup", "seed_all_rng", "setup_logging"]


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        epilog=epilog or (
            "Examples:\n"
            "  train:     tools/train_net.py --config-file configs/synthetic/mobile_parsing_rcnn_b_synthetic.yaml\n"
            "  resume:    tools/train_net.py --config-file C --resume\n"
            "  evaluate:  tools/train_net.py --config-file C --eval-only MODEL.WEIGHTS output/model_final.pth\n"
            "  exported:  tools/train_net.py --config-file C --eval-only --runtime onnxruntime "
            "MODEL.WEIGHTS model.onnx\n"
            "  2 procs:   tools/train_net.py --config-file C --num-gpus 2   (processes on CPU, GPUs with CUDA)\n"
            "  own data:  tools/train_net.py --config-file C --dataset mine=ann.json:images/ "
            "DATASETS.TRAIN '(\"mine\",)'\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last_checkpoint (else start from MODEL.WEIGHTS, iteration 0)")
    p.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine: one per GPU with CUDA; on CPU, that many gloo processes")
    p.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    p.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    p.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                   help="initialization URL for torch.distributed; 'auto' picks a free local port (one machine)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware training: wrap the loaded float model with "
                        "densepose_fnl.quantization.build_qat_model")
    p.add_argument("--runtime", choices=["pytorch", "onnxruntime"], default="pytorch",
                   help="with --eval-only: pytorch (default) evaluates a checkpoint; onnxruntime evaluates "
                        "MODEL.WEIGHTS = an ONNX file from tools/export_model.py with ONNX Runtime (one process)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=ANN.json:IMAGES/",
                   help="register your own COCO-DensePose JSON as dataset NAME (repeatable; appended to "
                        "DATASETS.REGISTER), then use it in DATASETS.TRAIN / DATASETS.TEST")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load checkpoints that carry pickled code (objects beyond tensors / numbers / strings): only for files you trust")
    p.add_argument("--log-period", type=int, default=20, help="iterations between log lines / metrics.json rows")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                   help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01")
    return p


def setup_logging(output_dir: Optional[str], rank: int = 0) -> None:
    """Console (rank 0: INFO, others: WARNING) and OUTPUT_DIR/log.txt (rank 0) / log.txt.rank{r}."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_densepose_fnl", False):
            root.removeHandler(h)
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    console._densepose_fnl = True
    root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}"))
        fh.setFormatter(fmt)
        fh._densepose_fnl = True
        root.addHandler(fh)


def seed_all_rng(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def default_setup(cfg, args=None) -> int:
    """Create OUTPUT_DIR, set up logging, write config.yaml, seed every RNG. Returns the seed used: SEED,
    or a random one (logged) when SEED < 0; each process seeds with seed + rank."""
    rank = comm.get_rank()
    output_dir = cfg.OUTPUT_DIR
    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    setup_logging(output_dir, rank)
    logger.info("Rank of this process: %d / world size %d", rank, comm.get_world_size())
    if args is not None:
        logger.info("Command line arguments: %s", vars(args))
    if output_dir and rank == 0:
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", os.path.join(output_dir, "config.yaml"))
    seed = int(cfg.SEED)
    if seed < 0:
        seed = comm.broadcast_int(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
        logger.info("SEED is %d: using the random seed %d", int(cfg.SEED), seed)
    else:
        logger.info("Using the seed %d (SEED)", seed)
    seed_all_rng(seed + rank)
    # cudnn picks the fastest kernels for fixed input sizes (no effect on the CPU)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    return seed
