"""nox sessions of the acids monorepo (STYLE.md §8). Run through `python3 tools/dev.py` or plain `nox`.

- lint:            ruff check + ruff format --check
- tests(<pkg>):    one package's tests in its own venv holding only that package, its third-party deps and
                   its *declared* acids-* deps (so an undeclared sibling import fails)
- pipeline:        the real console scripts joined by a real shell pipe (tools/test_pipeline.py)
- bench:           the benchmarks of tools/bench (minutes; prints ratios measured in the same run)
- demo:            the end-to-end job on the built-in real audio (assets/demo-audio)

Backend: virtualenv + pip (pip's configuration on our machines serves the CPU build of torch; uv would
download a CUDA build), with reuse_venv so a second run installs nothing. Under CI (CI set) each
tests/pipeline venv is removed when its session ends: every venv holds its own ~1 GB torch, and nine of
them at once filled the CI disk once.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from contextlib import contextmanager
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
TORCH = "torch==2.13.0"  # the CPU build on our machines; any torch>=2.1 works for users

CI = bool(os.environ.get("CI"))

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests", "pipeline"]


def _pyproject(package: str) -> dict:
    with open(ROOT / "packages" / package / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _acids_deps(package: str, seen: set[str] | None = None) -> list[str]:
    """Declared acids-* dependencies of a package, transitively (dependencies + the test extra)."""
    seen = set() if seen is None else seen
    project = _pyproject(package)["project"]
    reqs = list(project.get("dependencies", []))
    reqs += project.get("optional-dependencies", {}).get("test", [])
    out = []
    for req in reqs:
        name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip()
        if name.startswith("acids-") and name not in seen and name in PACKAGES:
            seen.add(name)
            out += [*_acids_deps(name, seen), name]
    return list(dict.fromkeys(out))


def _third_party(package: str) -> list[str]:
    project = _pyproject(package)["project"]
    reqs = list(project.get("dependencies", [])) + project.get("optional-dependencies", {}).get("test", [])
    return [r for r in reqs if not r.startswith("acids-")]


def install(session: nox.Session, package: str, extra_test: bool = True) -> None:
    """Install ``package`` and its declared acids-* deps (editable, --no-deps) plus their third-party deps."""
    chain = [*_acids_deps(package), package]
    third = []
    for p in chain:
        third += _third_party(p) if (extra_test or p != package) else _pyproject(p)["project"]["dependencies"]
    third = [t for t in dict.fromkeys(third) if not t.startswith("acids-")]
    if any(t.startswith("torch") for t in third):
        session.install(TORCH)
    if third:
        session.install(*third)
    for p in chain:
        session.install("--no-deps", "-e", f"packages/{p}")


@contextmanager
def _venv_dropped_in_ci(session: nox.Session):
    """Under CI, remove the session's venv when the session ends (kept locally for reuse)."""
    try:
        yield
    finally:
        location = getattr(session.virtualenv, "location", None)
        if CI and location:
            shutil.rmtree(location, ignore_errors=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check of the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(tags=["tests"])
@nox.parametrize("package", [nox.param(p, id=p, tags=[p]) for p in PACKAGES])
def tests(session: nox.Session, package: str) -> None:
    """Fast tests of one package in its own venv (`-- -m slow` for the long ones)."""
    with _venv_dropped_in_ci(session):
        install(session, package)
        session.run("pytest", f"packages/{package}/tests", *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session
def pipeline(session: nox.Session) -> None:
    """The real console scripts joined by real shell pipes."""
    with _venv_dropped_in_ci(session):
        for p in PACKAGES:
            install(session, p)
        session.run("pytest", "tools/test_pipeline.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the peers (minutes; installs the official tools into their own venvs)."""
    for p in PACKAGES:
        install(session, p)
    args = session.posargs or []
    session.run("python", "tools/bench/preprocess_bench.py", *args)
    session.run("python", "tools/bench/reader_bench.py", *args)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job end to end on the built-in real audio."""
    for p in PACKAGES:
        install(session, p, extra_test=False)
    session.run("python", "tools/demo.py", *session.posargs)
