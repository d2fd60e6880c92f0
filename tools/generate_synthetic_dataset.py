#!/usr/bin/env python
"""Generate the embedded synthetic DensePose-COCO dataset (see datasets/README.md).

Example:
    python tools/generate_synthetic_dataset.py --output datasets/synthetic --num-train 200 --num-val 50 --seed 0
    python tools/generate_synthetic_dataset.py --output datasets/synthetic_demo --preset demo   # the demo's set
then train/evaluate on `densepose_synthetic_train` / `densepose_synthetic_val` (with --cse also
`densepose_synthetic_cse_train` / `densepose_synthetic_cse_val`; found under
$DENSEPOSE_SYNTHETIC_ROOT, default <DENSEPOSE_DATASETS or ./datasets>/synthetic).
"""
import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="dataset root to write (train/, val/, annotations/, ...)")
    p.add_argument("--num-train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--num-val", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed = same dataset")
    p.add_argument("--min-size", type=int, default=128, help="smallest shortest image side (px)")
    p.add_argument("--max-size", type=int, default=192, help="largest shortest image side (px)")
    p.add_argument("--png", action="store_true", help="write lossless PNG instead of JPEG")
    p.add_argument("--save-dense", action="store_true", help="also save dense I/U/V/owner maps (*_dense.npz)")
    p.add_argument("--points-per-person", type=int, default=100,
                   help="DensePose points annotated per person (default 100, as DensePose-COCO)")
    p.add_argument("--layout", choices=("classic", "demo"), default="classic",
                   help="classic: the original set (1-4 people, simple backgrounds); demo: 1-3 larger people, "
                        "cluttered backgrounds")
    p.add_argument("--cse", action="store_true",
                   help="also write CSE annotations (dp_vertex, ref_model 'synthetic_body') and the synthetic "
                        "mesh files (<output>/meshes): datasets densepose_synthetic_cse_train / _val")
    p.add_argument("--preset", choices=("demo",), default=None,
                   help="demo: the set scripts/demo.sh trains on (densepose_fnl.data.synthetic.DEMO_PRESET: "
                        "400 / 50 images, shortest side 320-384, 1000 points per person, demo layout); "
                        "overrides the other options")
    args = p.parse_args(argv)
    if args.preset == "demo":
        from densepose_fnl.data.synthetic import DEMO_PRESET

        for key, value in DEMO_PRESET.items():
            setattr(args, key, value)
    if not 1 <= args.points_per_person <= 256 * 256:
        p.error(f"--points-per-person must be in 1..65536, got {args.points_per_person}")
    if args.num_train < 0 or args.num_val < 0:
        p.error("--num-train and --num-val must be >= 0")
    if not 8 <= args.min_size <= args.max_size:
        p.error(f"need 8 <= --min-size <= --max-size, got {args.min_size}, {args.max_size}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from densepose_fnl.data.synthetic import generate_synthetic_dataset

    t0 = time.time()
    root = generate_synthetic_dataset(
        args.output, args.num_train, args.num_val, args.seed, args.min_size, args.max_size,
        save_dense=args.save_dense, image_ext=".png" if args.png else ".jpg",
        points_per_person=args.points_per_person, layout=args.layout, cse=args.cse,
    )  # fmt: skip
    stats = json.loads((root / "manifest.json").read_text())["stats"]
    print(f"wrote {root} in {time.time() - t0:.1f}s: {stats}")
    print(f"use it with: export DENSEPOSE_SYNTHETIC_ROOT={os.path.abspath(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
