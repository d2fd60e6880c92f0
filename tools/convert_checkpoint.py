#!/usr/bin/env python
"""Convert a checkpoint once into densepose_fnl's format, validated against the model of a config.

    python tools/convert_checkpoint.py --from detectron2 model_final.pth --out mprcnn_b.pth \
        [--config-file configs/mobile_parsing_rcnn_b_s3x.yaml] [KEY VALUE ...]
    python tools/convert_checkpoint.py --from timm spnasnet_100.pth --out backbone.pth [--config-file C]

--from detectron2: a detectron2 / DensePoseFnL checkpoint (`{"model": state_dict, ...}` written by
torch.save, a bare state dict, or a model-zoo `.pkl` with numpy arrays; `module.` prefixes removed).
It must match the model of the config exactly (every entry present, same shapes), otherwise the tool
lists the offending entries and exits with status 1 without writing anything.
--from timm: ImageNet weights of a timm classifier, written as `backbone.bottom_up.*` entries
(classifier head dropped); the output is a backbone-only checkpoint for fine-tuning: load it with
`load_timm_backbone_weights(model, OUT)` or `DensePoseCheckpointer(model, strict=False).load(OUT)`.

Without --config-file the model is the authors' Mobile Parsing R-CNN B (chart-based, s3x).
The output holds tensors only ({"model": ..., "__author__": ..., "__converted_from__": ...}) and loads
with torch.load(weights_only=True). --trust allows full unpickling of an input that needs it (only
for files from a source you trust).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from densepose_fnl.checkpoint import (  # noqa: E402
    CheckpointLoadError, CheckpointMismatchError, atomic_torch_save, authors_b_config, load_checkpoint_file,
    load_model_state, load_timm_backbone_weights, normalize_state_dict,
)


def build_cfg(args):
    if args.config_file:
        from densepose_fnl.config import load_config

        return load_config(args.config_file, ["MODEL.TIMMNETS.PRETRAINED", "False", "MODEL.DEVICE", "cpu"] + args.opts)
    return authors_b_config(["MODEL.DEVICE", "cpu"] + args.opts)


def convert(args) -> int:
    from densepose_fnl.modeling import build_model

    cfg = build_cfg(args)
    model = build_model(cfg).eval()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        if args.source == "detectron2":
            data = load_checkpoint_file(args.input, trusted=args.trust)
            state_dict, prefix = normalize_state_dict(data["model"])
            report = load_model_state(model, state_dict, strict=True, source=args.input, stripped_prefix=prefix,
                                      matching_heuristics=bool(data.get("matching_heuristics", False)))
            author = str(data.get("__author__", "detectron2"))
            out_sd = model.state_dict()
        else:
            report = load_timm_backbone_weights(model, args.input, strict=True, trusted=args.trust)
            author = "timm"
            out_sd = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    except (CheckpointLoadError, CheckpointMismatchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # every written entry must come from the input: check nothing that should have loaded kept its init value
    loaded = report.loaded if args.source == "detectron2" else []
    unchanged = [k for k in loaded if init[k].numel() > 1 and torch.equal(init[k], out_sd[k])]
    if unchanged:
        logging.getLogger(__name__).warning("%d entries equal their init values (suspicious): %s", len(unchanged),
                                            ", ".join(unchanged[:10]))
    out = {"model": {k: v.detach().cpu().contiguous() for k, v in out_sd.items()}, "__author__": author,
           "__converted_from__": os.path.basename(args.input)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_torch_save(out, args.out)
    print(f"{args.input} -> {args.out}: {report.summary()}; {len(out['model'])} entries written")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--from", dest="source", choices=["detectron2", "timm"], required=True,
                        help="format of the input checkpoint")
    parser.add_argument("input", help="input checkpoint (.pth / .pkl; timm: also .safetensors)")
    parser.add_argument("--out", required=True, help="output .pth")
    parser.add_argument("--config-file", default="", help="model config (default: the authors' Mobile Parsing R-CNN B)")
    parser.add_argument("--trust", action="store_true", help="allow full unpickling of the input (trusted files only)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if os.path.abspath(args.input) == os.path.abspath(args.out):
        parser.error("--out must differ from the input")
    return convert(args)


if __name__ == "__main__":
    sys.exit(main())
