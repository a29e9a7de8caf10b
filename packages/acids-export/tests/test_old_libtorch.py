"""Our TorchScript files in the libtorch that nn~ v1.6.0 ships (2.5.1, reference/nntilde.md §1.6).

Slow, not in the default run (``pytest -m slow``): the first run downloads the torch 2.5.1 wheel from PyPI
(cp311 manylinux x86_64, 906 MB: PyPI has only the CUDA build) plus the two small CUDA runtime wheels its
``libtorch_cpu.so`` links (``nvidia-cuda-runtime-cu12``, ``nvidia-cuda-cupti-cu12``; nothing CUDA runs),
with pip, ``--no-deps``, into ``~/.cache/acids-export`` (``$ACIDS_EXPORT_CACHE``), and unpacks only the
headers, ``libtorch_cpu``, ``libc10`` and ``libgomp``. ``tests/host/nn_host.cpp`` is built against that
libtorch (its pre-C++11 string ABI read from ``libc10.so``) and loads each exported file the way nn~ does:
every method, three buffers each, batch 1 and 2; the outputs are compared with torch 2.13 running the same
file on the same buffers. The files the exporter refuses (``aten::stft``, ``F.interpolate``) are shown not
to load there, which is why they are refused.
"""

import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from bad_models import Gain, checkpoint, model_checkpoint
from torch import nn

from acids_core.errors import DataError
from acids_export import registry, torchscript

pytestmark = pytest.mark.slow

OLD = "2.5.1"
WHEELS = [  # (requirement, platform tag): the wheel and the two libraries libtorch_cpu.so needs to load
    (f"torch=={OLD}", "manylinux1_x86_64"),
    ("nvidia-cuda-runtime-cu12==12.4.127", "manylinux2014_x86_64"),
    ("nvidia-cuda-cupti-cu12==12.4.127", "manylinux2014_x86_64"),
]
SOURCE = Path(__file__).parent / "host" / "nn_host.cpp"
CACHE = Path(os.environ.get("ACIDS_EXPORT_CACHE", Path.home() / ".cache" / "acids-export"))


def _download(wheels: Path) -> list[Path]:
    found = []
    for req, plat in WHEELS:
        name, version = req.split("==")
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        if not list(wheels.glob(pattern)):
            cmd = [sys.executable, "-m", "pip", "download", req, "--no-deps", "--only-binary=:all:"]
            cmd += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
            cmd += ["--platform", plat, "-d", str(wheels), "--progress-bar", "off", "-q"]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if run.returncode != 0:
                pytest.skip(f"cannot download {req} from PyPI: {run.stderr.strip().splitlines()[-1:]}")
        found.append(next(wheels.glob(pattern)))
    return found


def _unpack(root: Path, wheels: list[Path]) -> None:
    if (root / "done").exists():
        return
    keep = ("torch/include/", "torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/lib/libgomp")
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            for n in z.namelist():
                if n.startswith(keep) or (n.startswith("nvidia/") and "/lib/lib" in n):
                    z.extract(n, root)
    (root / "done").write_text(OLD)


def _cxx11_abi(libc10: Path) -> int:
    data = libc10.read_bytes()
    if b"SourceLocationENSt7__cxx11" in data:
        return 1
    if b"SourceLocationESs" in data:
        return 0
    raise AssertionError(f"cannot tell the C++ string ABI of {libc10}")


@pytest.fixture(scope="session")
def old_host() -> Path:
    """nn_host built against libtorch 2.5.1 (cached by source hash)."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (install g++)")
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the torch 2.5.1 wheel used here is linux x86_64")
    root = CACHE / f"libtorch-{OLD}"
    key = hashlib.sha256(SOURCE.read_bytes() + OLD.encode()).hexdigest()[:16]
    exe = root / f"nn_host-{key}"
    if exe.exists():
        return exe
    (CACHE / "wheels").mkdir(parents=True, exist_ok=True)
    _unpack(root, _download(CACHE / "wheels"))
    lib = root / "torch" / "lib"
    nvidia = sorted({p.parent for p in (root / "nvidia").rglob("lib*.so*")})
    cmd = [cxx, "-std=c++17", "-O1", "-pthread", f"-D_GLIBCXX_USE_CXX11_ABI={_cxx11_abi(lib / 'libc10.so')}"]
    cmd += [f"-I{root / 'torch/include'}", f"-I{root / 'torch/include/torch/csrc/api/include'}"]
    cmd += [str(SOURCE), "-o", f"{exe}.tmp", f"-L{lib}", f"-Wl,-rpath,{lib}"]
    cmd += [f"-Wl,-rpath,{d}" for d in nvidia] + [f"-L{d}" for d in nvidia] + ["-ltorch_cpu", "-lc10"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    Path(f"{exe}.tmp").rename(exe)
    return exe


def _host(exe: Path, model: Path, buffer: int, batches: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(exe), str(model), str(buffer), str(batches)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _replay(path: Path, buffer: int, batches: int) -> dict[tuple[str, int], tuple[float, float]]:
    """What nn_host prints per (method, call), computed with this process's torch on the same buffers."""
    m = torchscript.load(path)
    out = {}
    for name in m.get_methods():
        in_ch, in_ratio, out_ch, out_ratio = getattr(m, f"{name}_params").tolist()
        fn = m if name == "forward" else getattr(m, name)
        for call in range(3):
            t = (
                torch.arange(buffer, dtype=torch.float32)
                .add(call * buffer)
                .mul(2 * math.pi * 220.0 / 44100.0)
            )
            audio = torch.sin(t).mul(0.5).expand(in_ch * batches, buffer).contiguous()
            x = audio.reshape(in_ch, batches, -1, in_ratio).select(-1, -1).permute(1, 0, 2).contiguous()
            with torch.inference_mode():
                y = fn(x).repeat_interleave(out_ratio).reshape(batches, out_ch, -1)
            out[(name, call)] = (float(y.abs().max()), float(y.abs().mean()))
    return out


def _assert_runs_like_here(exe: Path, path: Path, buffer: int = 4096, batches=(1, 2)) -> None:
    for nb in batches:
        run = _host(exe, path, buffer, nb)
        assert run.returncode == 0 and run.stdout.splitlines()[-1] == "RESULT PASS", run.stdout + run.stderr
        ref = _replay(path, buffer, nb)
        got = {}
        for line in run.stdout.splitlines():
            if line.startswith("RUN "):
                _, name, _, _, _, call, _, absmax, meanabs = line.split()
                got[(name, int(call))] = (float(absmax), float(meanabs))
        assert got.keys() == ref.keys()
        for k, (a, m) in got.items():
            assert a == pytest.approx(ref[k][0], rel=1e-4, abs=1e-6), (path.name, nb, k)
            assert m == pytest.approx(ref[k][1], rel=1e-4, abs=1e-7), (path.name, nb, k)


def test_tiny_streaming_runs_in_libtorch_2_5(old_host, tiny_ckpt, tmp_path):
    out = tmp_path / "tiny.ts"
    torchscript.export(registry.load(tiny_ckpt, streaming=True), out)
    _assert_runs_like_here(old_host, out)


def test_rave_tiny_streaming_runs_in_libtorch_2_5(old_host, tmp_path):
    pytest.importorskip("acids_rave")
    from acids_rave import checkpoint as rave_checkpoint
    from acids_rave.config import PRESETS
    from acids_rave.model import Rave

    torch.manual_seed(0)
    ckpt = rave_checkpoint.save(tmp_path / "rave.ckpt", Rave(PRESETS["tiny"]()).eval())
    out = tmp_path / "rave.ts"
    torchscript.export(registry.load(ckpt, streaming=True), out)
    _assert_runs_like_here(old_host, out)


def test_rave_prior_streaming_runs_in_libtorch_2_5(old_host, tmp_path):
    """A RAVE prior file (encode, decode, forward and the hashed-noise ``prior`` method) loads and samples
    the same frames in nn~'s libtorch: its integer hashing and Gumbel-max are plain tensor ops there too."""
    pytest.importorskip("acids_rave")
    from rave_models import rave_prior_checkpoint

    ckpt = rave_prior_checkpoint(tmp_path)
    out = tmp_path / "prior.ts"
    torchscript.export(registry.load(ckpt, streaming=True), out)
    _assert_runs_like_here(old_host, out)


def test_ddsp_tiny_streaming_runs_in_libtorch_2_5(old_host, tmp_path):
    pytest.importorskip("acids_ddsp")
    from acids_ddsp import checkpoint as ddsp_checkpoint
    from acids_ddsp.config import preset
    from acids_ddsp.model import DDSP

    torch.manual_seed(0)
    ckpt = ddsp_checkpoint.save(DDSP(preset("tiny")).eval(), tmp_path / "ddsp.ckpt")
    out = tmp_path / "ddsp.ts"
    torchscript.export(registry.load(ckpt, streaming=True), out)
    _assert_runs_like_here(old_host, out)


class Interpolating(Gain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x[..., ::4], scale_factor=4.0, mode="linear") * 0.5


@pytest.mark.parametrize("kind", ["stft", "interpolate"])
def test_what_the_exporter_refuses_does_not_load_in_libtorch_2_5(old_host, tmp_path, kind):
    if kind == "stft":
        ckpt = checkpoint(tmp_path, "bad", mode="stft")
    else:
        ckpt = model_checkpoint(tmp_path, "bad", Interpolating)
    try:
        with pytest.raises(DataError, match="refused for nn~"):
            torchscript.export(registry.load(ckpt), tmp_path / "refused.ts")
        forced = tmp_path / "forced.ts"
        torchscript.export(registry.load(ckpt), forced, allow_hazards=True)  # --allow-new-ops
    finally:
        registry.unregister("bad")
    torchscript.load(forced)  # torch 2.13 loads it ...
    run = _host(old_host, forced, 4096, 1)
    assert run.returncode == 1 and "FAIL load" in run.stdout  # ... libtorch 2.5.1 does not
