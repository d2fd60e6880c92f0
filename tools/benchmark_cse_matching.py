#!/usr/bin/env python3
"""Speed and exactness of the CSE pixel -> vertex matching, by synthetic scene and box size.

    benchmark_cse_matching.py [--scenes random surface surface+0.1 surface+0.3] [--boxes 46x21 150x80 300x160]
                              [--rounds 5] [--threads 2] [--vertices 27554] [--json OUT]

Prints a markdown table: median ms of the previous dense search (detectron2's distance matrix), our dense
search, the tiled pruned search and `closest_vertices` (the shipping search: a KD-tree when the vertex
embeddings lie on a low-dimensional surface, else the tiles), interleaved per round, and each one's agreement
with a float64 brute force. The scenes (what they model) are described in densepose_fnl/analysis/cse_matching.py.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_box(s: str):
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box must be HxW (e.g. 150x80), got {s!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"box sides must be positive, got {s!r}")
    return h, w


def main(argv=None) -> int:
    from densepose_fnl.analysis.cse_matching import SCENES, format_table, run

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES)
    p.add_argument("--boxes", nargs="+", type=parse_box, default=[(46, 21), (150, 80), (300, 160)])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vertices", type=int, default=27554)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = run(args.scenes, args.boxes, args.rounds, args.vertices,
               progress=lambda r: print(f"{r['scene']} {r['box']}: search {r['search_ms']:.1f} ms ({r['search_path']})", file=sys.stderr,
                                        flush=True))
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
