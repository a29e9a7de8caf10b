#!/usr/bin/env python3
"""The repository's two entry points, for a fresh clone with only Python 3.11+ and pip.

    python3 tools/dev.py demo     # the main job end to end on the built-in real audio
    python3 tools/dev.py test     # the whole test suite (lint, every package in its own venv, pipelines)

Also: `bench` (benchmarks against the peers), `nox ARGS...` (any nox command line). It makes one small
virtual environment (.tools-venv/) holding nox, then runs nox sessions, which make their own environments
under .nox/ (reused on the next run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_VENV = ROOT / ".tools-venv"
COMMANDS = {
    "demo": ["-s", "demo"],
    "test": ["-s", "lint", "tests", "pipeline"],
    "bench": ["-s", "bench"],
}


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_tools() -> Path:
    py = _python(TOOLS_VENV)
    if not py.exists():
        print(f"dev.py: creating {TOOLS_VENV.name}/ with nox", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(TOOLS_VENV)
    probe = subprocess.run([str(py), "-c", "import nox"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "nox>=2024.3"], check=True)
    return py


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        print("dev.py: Python 3.11 or newer is needed", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help") or (argv[0] not in COMMANDS and argv[0] != "nox"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    args = rest if command == "nox" else [*COMMANDS[command], *(["--", *rest] if rest else [])]
    py = ensure_tools()
    return subprocess.call([str(py), "-m", "nox", "-f", str(ROOT / "noxfile.py"), *args], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
