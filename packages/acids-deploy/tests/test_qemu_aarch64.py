"""The bundle's runner on aarch64 under qemu-user, with the board's own aarch64 wheels (slow).

The recipe is reference/deploy-and-export.md §3c: a Debian bookworm arm64 sysroot (what Raspberry Pi OS
bookworm is: Python 3.11, glibc 2.36) from ``debootstrap --foreign --variant=minbase --include=python3``
with the included debs extracted by hand (no second stage, no binfmt_misc); ``qemu-aarch64-static -L
ROOTFS`` called explicitly; and the one trick: an ARM ``ROOTFS/proc/cpuinfo``, served to the guest through
``-L``, without which onnxruntime's cpuinfo code crashes on the host's x86 ``/proc/cpuinfo``.

A real ``rpi-bookworm`` bundle (dependencies resolved by acids-deploy for Python 3.11 / manylinux aarch64)
is installed into ``ROOTFS/opt/acids-test-*`` by the board agent, exactly as on a board, and its runner
runs under emulation: ``--smoke``, ``--wav`` on real audio, ``--stdin`` PCM; the outputs are compared with
onnxruntime on the host.

The sysroot (about 230 MB) and the wheelhouse are cached in ``$ACIDS_DEPLOY_QEMU_CACHE`` (default
``~/.cache/acids-deploy-qemu``), so only the first run pays for debootstrap and the downloads. Needs
``qemu-user-static`` and ``debootstrap`` (Debian packages; debootstrap runs as root), the Debian archive
(``$ACIDS_DEPLOY_QEMU_MIRROR``, default deb.debian.org) and PyPI on the first run. Run it with
``pytest packages/acids-deploy/tests -m slow``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail

from acids_deploy.bundle import artifact_from_file, board_file, build_bundle
from acids_deploy.profiles import get_profile

pytestmark = pytest.mark.slow
log = logging.getLogger("acids.deploy.tests")

QEMU = shutil.which("qemu-aarch64-static") or "/usr/bin/qemu-aarch64-static"
DEBOOTSTRAP = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
MIRROR = os.environ.get("ACIDS_DEPLOY_QEMU_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"  # Raspberry Pi OS bookworm is Debian 12: Python 3.11, glibc 2.36
GUEST_PYTHON = "/usr/bin/python3.11"
READY = ".acids-rootfs-ready"
#: what onnxruntime's cpuinfo expects on a Pi 4 (Cortex-A72: implementer 0x41, part 0xd08)
ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\n"
    "Features\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    "CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
    for i in range(4)
)
UNREACHABLE = (
    "Failed getting release file",
    "Temporary failure resolving",
    "Couldn't download",
    "Could not resolve",
    "Network is unreachable",
    "Connection refused",
    "Connection timed out",
)


def cache_dir() -> Path:
    env = os.environ.get("ACIDS_DEPLOY_QEMU_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "acids-deploy-qemu"


def guest(rootfs: Path, *argv: str, input: bytes | None = None, timeout: float = 300):
    """Run the guest Python under qemu-user with ``rootfs`` as the sysroot (single process: the guest
    cannot exec further aarch64 programs)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [QEMU, "-L", str(rootfs), str(rootfs / GUEST_PYTHON.lstrip("/")), *argv]
    return subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=timeout)


def build_rootfs(dest: Path) -> None:
    """debootstrap (first stage only) + the included debs unpacked + the ARM cpuinfo, into ``dest``."""
    if os.geteuid() != 0:
        skip_or_fail(f"no cached arm64 sysroot at {dest} and debootstrap needs root", "QEMU")
    work = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    argv = [DEBOOTSTRAP, "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3", SUITE]
    proc = subprocess.run([*argv, str(work), MIRROR], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        if any(s in tail for s in UNREACHABLE):
            skip_or_fail(f"the Debian archive {MIRROR} is unreachable: {tail}", "QEMU")
        raise RuntimeError(f"debootstrap failed ({proc.returncode}): {tail}")
    # --foreign leaves the packages unpacked only in part and python3 not at all: unpack every deb
    debs = sorted((work / "var" / "cache" / "apt" / "archives").glob("*.deb"))
    assert any(d.name.startswith("python3.11-minimal_") for d in debs), [d.name for d in debs][:5]
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True, capture_output=True)
    for deb in debs:
        deb.unlink()  # 60 MB the tests never need again
    (work / "proc").mkdir(exist_ok=True)
    (work / "proc" / "cpuinfo").write_text(ARM_CPUINFO)
    probe = "import platform, sys; print(platform.machine(), platform.libc_ver()[1], sys.version.split()[0])"
    out = guest(work, "-c", probe)
    if out.returncode != 0:
        raise RuntimeError(f"the arm64 sysroot's python does not start under qemu: {out.stderr.decode()}")
    (work / READY).write_text(out.stdout.decode())
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(work, dest)


@pytest.fixture(scope="module")
def rootfs() -> Path:
    if not os.path.exists(QEMU):
        skip_or_fail(f"{QEMU} not installed: apt-get install qemu-user-static", "QEMU")
    dest = cache_dir() / f"rootfs-{SUITE}-arm64"
    if not (dest / READY).is_file():
        if not os.path.exists(DEBOOTSTRAP):
            skip_or_fail(f"{DEBOOTSTRAP} not installed: apt-get install debootstrap", "QEMU")
        dest.parent.mkdir(parents=True, exist_ok=True)
        build_rootfs(dest)
    machine, glibc, version = (dest / READY).read_text().split()
    assert (machine, glibc) == ("aarch64", "2.36") and version.startswith("3.11."), (machine, glibc, version)
    return dest


def fir_onnx(path: Path) -> Path:
    """A small audio->audio ONNX (opset 13, IR 7): Conv 1->4 (31 taps, seeded weights, same length),
    Tanh, Conv 4->1. Dynamic time axis, so the runner processes a WAV in one call."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((4, 1, 31)) / 8).astype(np.float32)
    b1 = (0.01 * rng.standard_normal(4)).astype(np.float32)
    w2 = (rng.standard_normal((1, 4, 1)) / 2).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "T"])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[15, 15]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Conv", ["t", "w2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    graph = helper.make_graph(nodes, "acids_fir", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def real_audio(seconds: float = 0.5) -> np.ndarray:
    """A flute note from the shared corpus (48 kHz), mono float32, ``seconds`` long from the attack."""
    import soundfile as sf

    root = Path(
        os.environ.get("ACIDS_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared/data")
    )
    path = root / "notes" / "48000" / "flute_072_080.flac"
    if not path.is_file():
        skip_or_fail(f"shared test audio not found: {path} (set ACIDS_SHARED_DATA)", "SHARED_DATA")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == 48000
    return np.ascontiguousarray(audio[: int(seconds * rate), 0])


def build_pi_bundle(model: Path, out: Path) -> dict:
    """A real rpi-bookworm bundle: onnxruntime + numpy for Python 3.11 aarch64, from the cached
    wheelhouse when it has them, else downloaded from PyPI into it."""
    from acids_core.errors import MissingDependency, TemporaryFailure

    profile = get_profile("rpi-bookworm")
    house = cache_dir() / "wheels" / profile.name
    arts = [artifact_from_file(model, profile)]
    if any(house.glob("*.whl")):
        try:
            return build_bundle(arts, profile, out, wheelhouse=house, download=False)
        except MissingDependency:
            pass  # the pins moved on: download what is missing
    try:
        return build_bundle(arts, profile, out, wheelhouse=house, download=True)
    except TemporaryFailure as e:
        skip_or_fail(f"PyPI unreachable for the aarch64 wheels: {e.message}", "QEMU")
        raise


def install_like_a_board(bundle: dict, root: Path) -> Path:
    """Upload-free install with the real board agent: incoming/<sha>.tar.part -> install -> switch."""
    agent = root / ".acids" / "agent.py"
    agent.parent.mkdir(parents=True)
    agent.write_bytes(board_file("agent.py"))
    (root / "incoming").mkdir()
    shutil.copyfile(bundle["path"], root / "incoming" / f"{bundle['sha256']}.tar.part")
    for cmd in (["install", bundle["sha256"], bundle["id"]], ["switch", bundle["id"]]):
        proc = subprocess.run([sys.executable, str(agent), cmd[0], str(root), *cmd[1:]], capture_output=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "current"


def host_model(model: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x[None, None].astype(np.float32)})[0][0, 0]


def write_wav16(path: Path, x: np.ndarray, rate: int = 48000) -> np.ndarray:
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return pcm


def test_runner_on_aarch64_under_qemu(rootfs: Path, tmp_path: Path):
    t_start = time.monotonic()
    model = fir_onnx(tmp_path / "models" / "fir.onnx")
    bundle = build_pi_bundle(model, tmp_path / "pi.tar")
    assert bundle["platform"] == "linux_aarch64" and bundle["python"] == "3.11"
    deps = dict(d.split("==") for d in bundle["dependencies"])
    assert deps["onnxruntime"] == "1.32.0" and "numpy" in deps
    with tarfile.open(bundle["path"]) as tf:
        names = tf.getnames()
    assert any(n.startswith("site/onnxruntime/capi/") and "aarch64" in n and n.endswith(".so") for n in names)

    root = rootfs / "opt" / f"acids-test-{uuid.uuid4().hex[:8]}"
    guest_root = "/" + root.relative_to(rootfs).as_posix()
    try:
        install_like_a_board(bundle, root)
        run = f"{guest_root}/current/run.py"

        # 1. smoke test: one buffer, a JSON report with the real-time factor
        frames = 4096
        proc = guest(rootfs, run, "--smoke", "--frames", str(frames), "--repeat", "2")
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()[-2000:]
        report = json.loads(proc.stdout)
        assert report["ok"] and report["machine"] == "aarch64" and report["python"].startswith("3.11.")
        assert report["onnxruntime"] == "1.32.0" and report["numpy"] == deps["numpy"]
        (m,) = report["models"]
        assert m["backend"] == "onnxruntime" and m["outputs"] == [[1, 1, frames]] and "error" not in m
        assert (
            m["audio_s"] == pytest.approx(frames / 48000, abs=1e-6)
            and math.isfinite(m["rtf"])
            and m["rtf"] > 0
        )
        assert report["rtf"] == m["rtf"] and m["latency_ms"] > 0

        # 2. a WAV of real audio: same length, finite, equal to onnxruntime on the host within 1 LSB
        audio = real_audio(0.5)
        pcm_in = write_wav16(tmp_path / "in.wav", audio)
        out = tmp_path / "out.wav"  # a host path (absent from the sysroot): qemu writes it on the host
        proc = guest(rootfs, run, "--wav", str(tmp_path / "in.wav"), "--out", str(out))
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()[-2000:]
        report = json.loads(proc.stdout)
        assert report["ok"] and report["backend"] == "onnxruntime" and report["audio_s"] == pytest.approx(0.5)
        assert math.isfinite(report["rtf"]) and report["rtf"] > 0
        with wave.open(str(out)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (48000, 1, len(audio))
            got = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int32)
        host = host_model(model)
        want = host(pcm_in.astype(np.float32) / 32768.0)
        want = (np.clip(want, -1, 1) * 32767).astype("<i2").astype(np.int32)
        assert np.abs(got - want).max() <= 1
        assert np.abs(want).max() > 1000  # the model really produced sound from the note

        # 3. float32 PCM on stdin, block by block: bit-for-bit close to the host's output per block
        block = 4096
        x = audio[: 3 * block + 1000]
        proc = guest(rootfs, run, "--stdin", "--block", str(block), input=x.astype("<f4").tobytes())
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        y = np.frombuffer(proc.stdout, dtype="<f4")
        assert y.shape == x.shape and np.all(np.isfinite(y))
        ref = np.concatenate([host(x[i : i + block]) for i in range(0, len(x), block)])
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-4)
        assert "RTF" in proc.stderr.decode()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log.info("qemu aarch64 runner test: %.1f s (sysroot %s)", time.monotonic() - t_start, rootfs)


def test_cached_sysroot_is_what_the_profile_says(rootfs: Path):
    """The emulated board matches the rpi-bookworm profile: Python, glibc, and the manylinux ladder's top."""
    profile = get_profile("rpi-bookworm")
    machine, glibc, version = (rootfs / READY).read_text().split()
    assert version.startswith(profile.python + ".")
    assert tuple(int(v) for v in glibc.split(".")) == profile.glibc
    assert profile.platforms()[0] == f"manylinux_{glibc.replace('.', '_')}_{machine}"
    digest = hashlib.sha256((rootfs / "proc" / "cpuinfo").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(ARM_CPUINFO.encode()).hexdigest()  # the trick is in place
