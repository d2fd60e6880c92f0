"""The reference-oracle tests: fixtures shared by the modules of this folder (see peer.py)."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer import peer_python  # noqa: E402,F401  (the fixture)


@pytest.fixture(autouse=True)
def same_threads_as_the_peer():
    """The peer's process runs with OMP_NUM_THREADS threads; ours must too, or the two round differently (other
    summation orders) and near-tied detections flip: a mismatch here would name a test's leak, not the model."""
    import torch

    want = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if want:
        assert torch.get_num_threads() == want, (
            f"torch runs {torch.get_num_threads()} threads, the peer OMP_NUM_THREADS={want}: an earlier test "
            "changed torch's thread count and did not restore it")
