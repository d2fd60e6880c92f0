#!/usr/bin/env python
"""Parameters per block, state-dict size and compute of a model given by its config.

    python tools/analyze_model.py --config-file configs/mobile_parsing_rcnn_b.yaml --tasks parameter flop
    python tools/analyze_model.py --config-file C --tasks parameter --format json [KEY VALUE ...]

No weights are needed (the model is built with random init; MODEL.TIMMNETS.PRETRAINED is ignored).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from densepose_fnl.analysis.model_stats import (  # noqa: E402
    compute_gmacs, count_parameters, parameters_by_block, state_dict_bytes)
from densepose_fnl.config import ConfigError, load_config  # noqa: E402
from densepose_fnl.modeling import build_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", default=["parameter"], choices=["parameter", "flop"])
    parser.add_argument("--format", default="text", choices=["text", "json"])
    parser.add_argument("--input-size", nargs=2, type=int, default=[512, 683], metavar=("H", "W"),
                        help="network input size for the flop count (default: 512 683, shortest side 512)")
    parser.add_argument("--people", type=int, default=1, help="persons reaching the DensePose head (default 1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts + ["MODEL.TIMMNETS.PRETRAINED", False, "MODEL.DEVICE", "cpu"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = build_model(cfg)
    report = {"config": args.config_file}
    if "parameter" in args.tasks:
        raw, saved = state_dict_bytes(model)
        report.update(params_total=count_parameters(model), params_by_block=parameters_by_block(model),
                      params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                      state_dict_bytes=saved, state_dict_tensor_bytes=raw)
    if "flop" in args.tasks:
        h, w = args.input_size
        report["gflops"] = compute_gmacs(model, h, w, cfg.MODEL.RPN.POST_NMS_TOPK_TEST, args.people)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    if "params_total" in report:
        print(f"{'block':<22}{'parameters':>14}")
        for k, v in report["params_by_block"].items():
            print(f"{k:<22}{v:>14,}")
        print(f"{'total':<22}{report['params_total']:>14,}  ({report['params_total'] / 1e6:.2f}M; "
              f"trainable {report['params_trainable']:,})")
        print(f"fp32 state dict: {report['state_dict_bytes']:,} bytes as saved "
              f"({report['state_dict_bytes'] / 1e6:.1f} MB)")
    if "gflops" in report:
        g = report["gflops"]
        print(f"compute at {g['input_size'][0]}x{g['input_size'][1]} (padded {g['padded_size'][0]}x"
              f"{g['padded_size'][1]}), {g['num_proposals']} proposals, {g['num_people']} people: "
              f"{g['total']:.2f} GMACs")
        print(f"  backbone+neck+RPN head {g['backbone_neck_rpn_head']:.3f}, box head {g['box_head_per_proposal'] * 1e3:.2f}"
              f" M/proposal, DensePose {g['densepose_per_person'] * 1e3:.1f} M/person")
    return 0


if __name__ == "__main__":
    sys.exit(main())
