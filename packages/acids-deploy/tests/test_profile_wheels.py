"""The profiles' pinned dependencies exist on PyPI for their boards (slow: real ``pip download``).

For jetson-jp4 (Python 3.6, glibc 2.27) and rpi-bookworm (Python 3.11, glibc 2.36), and the other aarch64
profiles (jetson-jp5: 3.8 / 2.31, jetson-jp6: 3.10 / 2.35), acids-deploy's own
dependency step (``pip download`` with the board's CPython version and every rung of its manylinux ladder,
then ``pip install --target`` from that wheelhouse) must resolve every pin to wheels the board can install:
binary wheels for aarch64 and the board's cp tag, or pure ones. The shared libraries installed are checked
to be aarch64 ELF files. Needs PyPI; run with ``pytest packages/acids-deploy/tests -m slow``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from conftest import skip_or_fail
from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from acids_deploy.bundle import resolve_dependencies
from acids_deploy.profiles import get_profile

pytestmark = pytest.mark.slow

EM_AARCH64 = 183  # ELF e_machine
log = logging.getLogger("acids.deploy.tests")


def board_tags(name: str) -> set[tags.Tag]:
    """Every wheel tag the profile's board accepts (its CPython, its manylinux ladder)."""
    p = get_profile(name)
    version = tuple(int(v) for v in p.python.split("."))
    abi = p.python_tag + ("m" if version < (3, 8) else "")  # 3.6 and 3.7 builds are "pymalloc" (cp36m)
    ladder = p.platforms()
    ok = set(tags.cpython_tags(version, abis=[abi], platforms=ladder))
    return ok | set(tags.compatible_tags(version, interpreter=p.python_tag, platforms=ladder))


def elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", path
    return int.from_bytes(head[18:20], "little")


@pytest.mark.parametrize(
    ("profile", "pins"),
    [
        ("jetson-jp4", {"onnxruntime": "1.10.0", "numpy": "1.19.5"}),
        ("rpi-bookworm", {"onnxruntime": "1.32.0"}),
        ("jetson-jp5", {"onnxruntime": "1.19.2"}),
        ("jetson-jp6", {"onnxruntime": "1.23.2"}),
    ],
)
def test_profile_pins_resolve_to_board_wheels(profile: str, pins: dict[str, str], tmp_path: Path):
    from acids_core.errors import TemporaryFailure

    p = get_profile(profile)
    house, site = tmp_path / "wheels", tmp_path / "site"
    t0 = time.monotonic()
    try:
        installed = resolve_dependencies(p, list(p.requirements), site, house, download=True)
    except TemporaryFailure as e:
        skip_or_fail(f"PyPI unreachable: {e.message}", "PYPI")
    seconds = time.monotonic() - t0

    accepted = board_tags(profile)
    wheels = {}
    for whl in sorted(house.glob("*.whl")):
        name, version, _build, wtags = parse_wheel_filename(whl.name)
        assert wtags & accepted, f"{whl.name} does not install on a {profile} board"
        binary = [t for t in wtags if t.platform != "any"]
        assert all(t.platform.endswith("_aarch64") for t in binary), whl.name
        # built for exactly this Python (cp36-cp36m), or for the stable ABI of an older one (cp310-abi3)
        own = any(t.interpreter == p.python_tag and t.abi.startswith(p.python_tag) for t in binary)
        wheels[str(name)] = (str(version), "binary" if own else "abi3" if binary else "pure")
    assert list(house.iterdir()) and all(f.suffix == ".whl" for f in house.iterdir())  # no sdist
    for dist, version in pins.items():
        # the pin exists as an aarch64 wheel with the board's own cp tag
        assert wheels[canonicalize_name(dist)] == (version, "binary"), wheels
        assert f"{dist}=={version}" in installed

    # what went into site/ is what a board runs: aarch64 shared libraries for that Python
    libs = sorted((site / "onnxruntime" / "capi").glob("*.so*"))
    assert libs and all(elf_machine(lib) == EM_AARCH64 for lib in libs)
    numpy_libs = [f for f in (site / "numpy").rglob("*.so") if "multiarray_umath" in f.name]
    assert numpy_libs and elf_machine(numpy_libs[0]) == EM_AARCH64
    assert (
        f".cpython-{p.python_tag[2:]}{'m' if p.python == '3.6' else ''}-aarch64-linux-gnu.so"
        in numpy_libs[0].name
    )
    size_mb = sum(f.stat().st_size for f in house.iterdir()) / 1e6
    log.info("%s: %d wheels, %.1f MB, download + install %.1f s: %s", profile, len(wheels), size_mb, seconds,
             sorted(installed))  # fmt: skip
