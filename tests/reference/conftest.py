"""The reference-oracle tests: fixtures shared by the modules of this folder (see peer.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer import peer_python  # noqa: E402,F401  (the fixture)
