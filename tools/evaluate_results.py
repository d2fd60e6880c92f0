#!/usr/bin/env python3
"""Score a COCO-DensePose results file: box AP and DensePose AP (GPS, GPSm, IOU) by the official protocol.

    evaluate_results.py --gt ANN.json --results RES.json [--eval-data DIR] [--output OUT.json]
                        [--min-iou-threshold 0.5] [--cache-dir DIR] [--no-densepose]

RES.json: a list of {"image_id", "category_id", "bbox": [x, y, w, h], "score", "uv_shape", "uv_data"}
(the challenge format; entries without uv_data count for box AP only). --eval-data: directory with the
official SMPL_subdiv.mat, SMPL_SUBDIV_TRANSFORM.mat, Pdist_matrix.pkl (default $DENSEPOSE_EVAL_DATA or
./datasets/densepose_eval_data). Prints the tables; --output writes the metrics as JSON.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densepose_fnl.evaluation import EvalDataMissingError  # noqa: E402
from densepose_fnl.evaluation.results_file import MalformedFileError, evaluate_results_file  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", required=True, help="COCO-DensePose annotation json")
    ap.add_argument("--results", required=True, help="results json (challenge format)")
    ap.add_argument("--eval-data", default=None, help="directory of the official geodesic eval files")
    ap.add_argument("--output", default=None, help="write the metrics here (json)")
    ap.add_argument("--min-iou-threshold", type=float, default=0.5)
    ap.add_argument("--cache-dir", default=None, help="where to put the distance-table cache if not beside it")
    ap.add_argument("--no-densepose", action="store_true", help="box AP only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        res = evaluate_results_file(
            args.gt, args.results, args.eval_data, args.min_iou_threshold, args.cache_dir, not args.no_densepose
        )
    except (EvalDataMissingError, MalformedFileError) as e:
        print(f"evaluate_results.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
