"""Helpers of the reference tests: find the reference-peer interpreter and run peer-side scripts in it.

The reference peer (detectron2 + projects/DensePose + the authors' DensePoseFnL) lives in its own virtual
environment, built by ``bash /work/shared/reference-peer/build.sh <repo>/.venv-reference`` (CI builds it, see
README). The project never imports detectron2: peer code runs only in a subprocess of that interpreter
(scripts in ``tests/reference/peer_scripts/``), and results travel through files.

* ``find_peer_python()``: ``$DENSEPOSE_REFERENCE_PYTHON`` or ``<repo>/.venv-reference/bin/python``, None if absent;
* ``peer_python`` (fixture) / ``require_peer_python()``: that path, else ``pytest.fail`` when ``$CI`` is set
  (the oracle must run in CI) or ``pytest.skip`` on a developer machine without it;
* ``run_peer(script, *args, cwd=None, timeout=...)``: run ``peer_scripts/<script>`` with it; raise with its
  output on a non-zero exit; return the ``CompletedProcess``.
"""
import os
import subprocess
from pathlib import Path
from typing import Optional, Union

import pytest

REPO = Path(__file__).resolve().parents[2]
PEER_SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"
SHARED_PEER = REPO.parent / "shared" / "reference-peer"
ENV_PEER_PYTHON = "DENSEPOSE_REFERENCE_PYTHON"


def our_opts(model: dict) -> list:
    """Our side's extra config options for a compared model: the authors' Mobile Parsing R-CNN YAMLs run as our
    own B configs do (configs/Base-Mobile-Parsing-RCNN.yaml: eager inference on a channels-last image), so
    the oracle checks the layout our users get; detectron2's YAMLs keep detectron2's defaults."""
    return ["TEST.CHANNELS_LAST", True] if model["kind"] == "authors" else []


def find_peer_python() -> Optional[Path]:
    env = os.environ.get(ENV_PEER_PYTHON, "")
    path = Path(env).expanduser() if env else REPO / ".venv-reference" / "bin" / "python"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_peer_python() -> Path:
    path = find_peer_python()
    if path is None:
        where = os.environ.get(ENV_PEER_PYTHON) or str(REPO / ".venv-reference" / "bin" / "python")
        msg = (f"reference peer interpreter not found ({where}); build it with "
               f"`bash {SHARED_PEER / 'build.sh'} {REPO / '.venv-reference'}` or set ${ENV_PEER_PYTHON}")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def peer_python() -> Path:
    return require_peer_python()


def peer_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["REFERENCE_PEER_SRC"] = str(SHARED_PEER)
    return env


def run_peer(script: Union[str, Path], *args, cwd: Optional[Union[str, Path]] = None, timeout: float = 600,
             python: Optional[Union[str, Path]] = None) -> subprocess.CompletedProcess:
    """Run a peer-side script (a name in peer_scripts/ or a path) with the peer interpreter."""
    python = python or require_peer_python()
    script = Path(script)
    if not script.is_absolute():
        script = PEER_SCRIPTS / script
    cmd = [str(python), str(script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=None if cwd is None else str(cwd), env=peer_env(), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"peer script failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-12000:]}")
    return proc
