"""The install is reproducible: every dependency of pyproject.toml is pinned in constraints.txt to a version
inside its declared range, and the environment running the tests has exactly the pinned versions (so the
ranges are backed by a passing suite)."""
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def _requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in reqs]


def test_every_dependency_is_pinned_inside_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])


def test_the_tested_environment_has_the_pinned_versions():
    pins = _pins()
    for req in _requirements():
        assert metadata.version(req.name) == pins[canonicalize_name(req.name)], req.name
