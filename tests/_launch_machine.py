"""One "machine" of a multi-machine run, for test_train_distributed: parses the launcher flags of
train_net (`--num-gpus`, `--num-machines`, `--machine-rank`, `--dist-url`) with the same argument parser and
launches the test's training worker with them. Usage: python _launch_machine.py SYNTH_ROOT OUT_DIR FLAGS..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_train_distributed import _worker  # noqa: E402

from densepose_fnl.engine import default_argument_parser, launch  # noqa: E402

if __name__ == "__main__":
    synth, out = sys.argv[1], sys.argv[2]
    args = default_argument_parser().parse_args(sys.argv[3:])
    launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(synth, out), use_cuda=False)
