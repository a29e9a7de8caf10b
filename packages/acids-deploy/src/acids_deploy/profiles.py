"""Board profiles: what Python, platform and runtime each kind of board has.

The names match acids-export's profiles. The facts (Python version, glibc, the last onnxruntime wheel that
exists for that Python on aarch64, the TensorRT version of the JetPack) come from
``reference/deploy-and-export.md`` §1.
"""

from __future__ import annotations

from dataclasses import dataclass

from acids_core.errors import UsageError


@dataclass(frozen=True)
class TensorRT:
    """How a Jetson builds TensorRT engines on the device (engines are not portable).

    ``versions`` and ``note`` are documentation only: the TensorRT version that goes into the engine cache
    key, the timing cache and the logs is read on the board at push time (``trtexec --version``, dpkg,
    ``tensorrt.__version__``), because one profile spans several JetPack releases.
    """

    versions: tuple[str, ...]  # major.minor of the TensorRT releases this profile's JetPacks ship
    note: str = ""  # which JetPack ships which
    trtexec: str = "/usr/src/tensorrt/bin/trtexec"
    precision: str = "fp16"  # when neither the artifact record nor its recipe says
    max_opset: int = 13  # the lowest parser ceiling among ``versions``

    @property
    def expected(self) -> str:
        """For people: ``"8.6 (JetPack 6.0) / 10.3 (JetPack 6.1, 6.2)"``."""
        return self.note or " / ".join(self.versions)

    def documents(self, version: str) -> bool:
        """Whether a board's TensorRT ``version`` (``"8.6.2.3"``) is one this profile lists."""
        return ".".join(version.split(".")[:2]) in self.versions


@dataclass(frozen=True)
class Profile:
    """One kind of board.

    Attributes:
        name: the profile name shared with acids-export.
        python: the board's system Python, ``"3.6"``.
        arch: ``"aarch64"`` or ``"x86_64"``.
        glibc: the board's glibc as (major, minor); the top of the manylinux tag ladder.
        requirements: the runner's dependencies, pinned where the board limits the version.
        formats: artifact formats a bundle for this profile accepts.
        tensorrt: the on-device engine build, or None.
        description: one line for ``acids-deploy boards``.
    """

    name: str
    python: str
    arch: str
    glibc: tuple[int, int]
    requirements: tuple[str, ...]
    formats: tuple[str, ...]
    tensorrt: TensorRT | None = None
    description: str = ""

    @property
    def python_tag(self) -> str:
        """``cp36`` for Python 3.6."""
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        """The manylinux tags pip must be given, newest first (pip does not infer the ladder itself)."""
        return manylinux_ladder(self.arch, self.glibc)


def manylinux_ladder(arch: str, glibc: tuple[int, int]) -> list[str]:
    """Every manylinux tag a board with this glibc accepts, newest first.

    ``manylinux_2_17`` is also spelt ``manylinux2014``; on x86_64 the older ``manylinux2010`` (2.12) and
    ``manylinux1`` (2.5) exist too. aarch64 wheels start at 2.17.
    """
    major, minor = glibc
    if major != 2:
        raise ValueError(f"unexpected glibc {major}.{minor}")
    lowest = 17 if arch == "aarch64" else 5
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, lowest - 1, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for m, name in legacy.items():
        if lowest <= m <= minor and not (arch == "aarch64" and m < 17):
            tags.append(f"{name}_{arch}")
    return tags


_ONNX_FORMATS = ("onnx", "torchscript")
_JETSON_FORMATS = ("onnx", "tensorrt-onnx", "torchscript")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "desktop",
            python="3.11",
            arch="x86_64",
            glibc=(2, 35),
            requirements=("onnxruntime>=1.16", "numpy>=1.24"),
            formats=_ONNX_FORMATS,
            description="x86_64 Linux, Python 3.11, onnxruntime (CPU)",
        ),
        Profile(
            "rpi-bookworm",
            python="3.11",
            arch="aarch64",
            glibc=(2, 36),
            requirements=("onnxruntime==1.32.0", "numpy>=1.24"),
            formats=_ONNX_FORMATS,
            description="Raspberry Pi OS bookworm 64-bit, Python 3.11, onnxruntime 1.32",
        ),
        Profile(
            "jetson-jp4",
            python="3.6",
            arch="aarch64",
            glibc=(2, 27),
            # onnxruntime 1.10.0 is the last cp36 aarch64 wheel; numpy 1.19.5 the last for 3.6
            requirements=("onnxruntime==1.10.0", "numpy==1.19.5"),
            formats=_JETSON_FORMATS,
            tensorrt=TensorRT(("8.0", "8.2"), "8.0 (JetPack 4.6) / 8.2 (JetPack 4.6.1+)", max_opset=13),
            description="Jetson Nano, JetPack 4.6 (Ubuntu 18.04), Python 3.6, TensorRT 8.0/8.2",
        ),
        Profile(
            "jetson-jp5",
            python="3.8",
            arch="aarch64",
            glibc=(2, 31),
            requirements=("onnxruntime==1.19.2", "numpy<1.25"),
            formats=_JETSON_FORMATS,
            tensorrt=TensorRT(("8.5",), "8.5 (JetPack 5.1)", max_opset=17),
            description="Jetson Xavier/Orin, JetPack 5.1 (Ubuntu 20.04), Python 3.8, TensorRT 8.5",
        ),
        Profile(
            "jetson-jp6",
            python="3.10",
            arch="aarch64",
            glibc=(2, 35),
            requirements=("onnxruntime==1.23.2", "numpy>=1.24"),
            formats=_JETSON_FORMATS,
            tensorrt=TensorRT(("8.6", "10.3"), "8.6 (JetPack 6.0) / 10.3 (JetPack 6.1, 6.2)", max_opset=17),
            description="Jetson Orin, JetPack 6.x (Ubuntu 22.04), Python 3.10, TensorRT 8.6/10.3",
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``, or a usage error listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UsageError(f"unknown profile {name!r} (known: {known})") from None
