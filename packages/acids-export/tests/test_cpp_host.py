"""A C++ host built against the libtorch inside the torch wheel loads the exported file the way nn~ does."""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from bad_models import checkpoint
from torch.utils import cpp_extension

from acids_export import registry, torchscript

SOURCE = Path(__file__).parent / "host" / "nn_host.cpp"


@pytest.fixture(scope="session")
def nn_host(request):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (install g++)")
    key = hashlib.sha256(
        SOURCE.read_bytes() + torch.__version__.encode() + torch.__file__.encode()
    ).hexdigest()
    exe = request.config.cache.mkdir("acids-export-nn-host") / f"nn_host-{key[:16]}"
    if not exe.exists():
        libs = cpp_extension.library_paths()[0]
        cmd = [
            cxx,
            "-std=c++20",
            "-O1",
            "-pthread",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        ]
        cmd += [f"-I{p}" for p in cpp_extension.include_paths()]
        cmd += [
            str(SOURCE),
            "-o",
            str(exe) + ".tmp",
            f"-L{libs}",
            f"-Wl,-rpath,{libs}",
            "-ltorch",
            "-ltorch_cpu",
            "-lc10",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        (exe.parent / (exe.name + ".tmp")).rename(exe)
    return exe


def _host(exe, model, *args):
    return subprocess.run(
        [str(exe), str(model), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_host_lists_and_runs_every_method(nn_host, tiny_ckpt, tmp_path):
    out = tmp_path / "tiny.ts"
    torchscript.export(registry.load(tiny_ckpt, streaming=True), out)
    for batches in (1, 2):
        run = _host(nn_host, out, 4096, batches)
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        assert "METHOD forward 1 1 1 1" in lines and "METHOD encode 1 1 4 16" in lines
        assert "METHOD decode 4 16 1 1" in lines
        assert "SAMPLE_RATE 16000" in lines and "ATTRIBUTE gain values 1 set 0" in lines
        assert sum(line.startswith("RUN ") for line in lines) == 9 and lines[-1] == "RESULT PASS"


def test_host_catches_a_wrong_output_length(nn_host, tmp_path):
    ckpt = checkpoint(tmp_path, "bad", mode="short")
    try:
        torchscript.export(registry.load(ckpt), tmp_path / "short.ts")  # the check would refuse it
    finally:
        registry.unregister("bad")
    run = _host(nn_host, tmp_path / "short.ts", 4096)
    assert run.returncode == 1 and "FAIL forward returned" in run.stdout
