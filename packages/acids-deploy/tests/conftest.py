"""Fixtures: tiny ONNX models, bundles, and simulated boards (real OpenSSH sshd on 127.0.0.1 high ports).

Each board is an ``sshd -D`` process with its own host key, an ``authorized_keys`` holding a throw-away
client key, and a board directory used as the install dir. Its sessions get a PATH whose first entry holds
stand-in ``systemctl`` / ``journalctl`` scripts that log their arguments (no systemd runs here). The
board's "Python" is this interpreter, so the runner's smoke test really runs onnxruntime. Nothing listens
or connects outside 127.0.0.1.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def skip_or_fail(reason: str, key: str) -> None:
    """Skip locally; fail in CI (env CI set) unless ACIDS_TEST_ALLOW_SKIP_<KEY> is set (STYLE.md §7)."""
    if os.environ.get("CI") and not os.environ.get(f"ACIDS_TEST_ALLOW_SKIP_{key}"):
        pytest.fail(f"{reason} (CI is set; set ACIDS_TEST_ALLOW_SKIP_{key}=1 to allow skipping)")
    pytest.skip(reason)


# -- tiny ONNX models ----------------------------------------------------------------------------------


def make_onnx(path: Path, kind: str = "gain", extra_floats: int = 0) -> Path:
    """A tiny audio->audio ONNX model, input ``x`` (1, 1, T) float32, opset 13, IR 7 (old runtimes).

    kind: ``gain`` (y = 0.5 x through a 1-tap Conv), ``nan`` (y = log(-|x| - 1): NaN, fails a smoke test).
    extra_floats: size of an additional initializer, to make a bigger file.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "T"])
    inits = [numpy_helper.from_array(np.full((1, 1, 1), 0.5, dtype=np.float32), "w")]
    if kind == "gain":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    elif kind == "nan":
        inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
        nodes = [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Neg", ["a"], ["n"]),
            helper.make_node("Sub", ["n", "one"], ["m"]),
            helper.make_node("Log", ["m"], ["y"]),
        ]
    else:
        raise ValueError(kind)
    if extra_floats:
        rng = np.random.default_rng(0)
        big = rng.standard_normal(extra_floats).astype(np.float32)
        inits.append(numpy_helper.from_array(big, "unused_big"))
        x2 = helper.make_tensor_value_info("unused_big_out", TensorProto.FLOAT, [extra_floats])
        nodes.append(helper.make_node("Identity", ["unused_big"], ["unused_big_out"]))
        outputs = [y, x2]
    else:
        outputs = [y]
    graph = helper.make_graph(nodes, f"acids_{kind}", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def gain_onnx(tmp_path: Path) -> Path:
    return make_onnx(tmp_path / "models" / "gain.onnx")


@pytest.fixture
def nan_onnx(tmp_path: Path) -> Path:
    return make_onnx(tmp_path / "bad" / "gain.onnx", kind="nan")


def make_trt_export(
    onnx_path: Path, precision: str = "fp16", gain: float = 0.5, flags: tuple[str, ...] = ("--noTF32",)
) -> dict:
    """What ``acids-export tensorrt`` leaves beside an ONNX file, written by hand (no torch here):
    ``NAME.ref.npz`` (two calls of ``x`` and ``y = gain * x``) and ``NAME.trt.json`` (recipe layout with
    its trtexec line). Returns the matching ``artifact`` record."""
    import hashlib
    import json

    import numpy as np

    ref, recipe = onnx_path.with_suffix(".ref.npz"), onnx_path.with_suffix(".trt.json")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 1, 1, 256)).astype(np.float32)
    with open(ref, "wb") as f:
        np.savez(f, x=x, y=(gain * x).astype(np.float32))
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    name = onnx_path.name
    shapes = ["--minShapes=x:1x1x64", "--optShapes=x:1x1x256", "--maxShapes=x:1x1x1024"]
    argv = ["/usr/src/tensorrt/bin/trtexec", f"--onnx={name}", f"--saveEngine={name}.plan"]
    argv += (["--fp16"] if precision == "fp16" else []) + shapes + list(flags)
    argv += ["--timingCacheFile=timing-trt8.2.cache"]
    tol = {"fp16": 2e-2, "fp32": 1e-3}[precision]
    recipe.write_text(
        json.dumps(
            {
                "format": "acids-trt-recipe",
                "format_version": 1,
                "profile": "jetson-jp4",
                "tensorrt": "8.2",
                "models": [{"path": name, "sha256": digest, "precision": precision, "extra_args": shapes}],
                "command": argv,
                "reference": {"path": ref.name, "precision": precision, "atol": tol, "rtol": tol / 2},
            }
        )
    )
    return {
        "kind": "artifact",
        "version": 1,
        "format": "tensorrt-onnx",
        "path": str(onnx_path),
        "sha256": digest,
        "profile": "jetson-jp4",
        "precision": precision,
        "io": {
            "sample_rate": 48000,
            "trt_shapes": {"min": "x:1x1x64", "opt": "x:1x1x256", "max": "x:1x1x1024"},
        },
        "reference": str(ref),
        "recipe": str(recipe),
    }


def make_bundle(
    tmp: Path, model: Path, name: str, profile: str = "desktop", extra: list[Path] | None = None
) -> dict:
    """A bundle of ``model`` (+ extra files) with no dependencies (the simulated board has them)."""
    from acids_deploy.bundle import artifact_from_file, build_bundle
    from acids_deploy.profiles import get_profile

    p = get_profile(profile)
    arts = [artifact_from_file(model, p)] + [artifact_from_file(e, p) for e in extra or []]
    return build_bundle(arts, p, tmp / name, deps=False)


# -- simulated boards ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path


@dataclass
class SimBoard:
    name: str
    dir: Path
    port: int
    host_key: Path
    install_dir: Path
    proc: subprocess.Popen | None = None
    log: Path | None = None
    groups: list[str] = field(default_factory=list)

    def calls(self, tool: str = "systemctl") -> list[str]:
        """The arguments of every call of the board's fake ``systemctl`` (or ``journalctl``)."""
        log = self.dir / f"{tool}.log"
        return log.read_text().splitlines() if log.exists() else []

    def known_hosts_line(self) -> str:
        pub = self.host_key.with_suffix(".pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="session")
def sshd_available() -> bool:
    if not os.path.exists(SSHD):
        skip_or_fail(f"OpenSSH sshd not installed ({SSHD}): apt-get install openssh-server", "SSHD")
    return True


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("client-keys")
    return {"good": keygen(d / "client_ed25519"), "wrong": keygen(d / "wrong_ed25519")}


class Fleet:
    """Starts simulated boards and writes inventories for them."""

    def __init__(self, root: Path, client_keys: dict[str, Path]) -> None:
        self.root = root
        self.client_keys = client_keys
        self.boards: dict[str, SimBoard] = {}

    def board(self, name: str, groups: list[str] | None = None) -> SimBoard:
        d = self.root / name
        (d / "etc").mkdir(parents=True)
        host_key = keygen(d / "etc" / "host_ed25519")
        auth = d / "etc" / "authorized_keys"
        auth.write_text(self.client_keys["good"].with_suffix(".pub").read_text())
        install = d / "opt" / "acids"
        port = free_port()
        # the board's own `systemctl` and `journalctl` (first on its PATH): they log their arguments
        fake_bin = d / "bin"
        fake_bin.mkdir()
        for tool in ("systemctl", "journalctl"):
            script = fake_bin / tool
            script.write_text(f'#!/bin/sh\necho "$*" >> "{d}/{tool}.log"\necho "{tool} $*"\n')
            script.chmod(0o755)
        cfg = d / "etc" / "sshd_config"
        cfg.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
            "MaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n"
            f"SetEnv PATH={fake_bin}:/usr/local/bin:/usr/bin:/bin\n"
        )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd wants as root
        b = SimBoard(name, d, port, host_key, install, groups=groups or [])
        b.log = d / "sshd.log"
        with open(b.log, "wb") as logf:
            b.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(cfg)], stdout=logf, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b.proc.poll() is not None:
                raise RuntimeError(f"sshd for {name} exited: {b.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"sshd for {name} did not listen on {port}")
        self.boards[name] = b
        return b

    def inventory(
        self,
        boards: list[SimBoard] | None = None,
        known_hosts: str | None = None,
        key: str = "good",
        extra: str = "",
        name: str = "boards.toml",
        profile: str = "desktop",
    ) -> Path:
        boards = list(self.boards.values()) if boards is None else boards
        kh = self.root / f"{name}.known_hosts"
        kh.write_text("".join(b.known_hosts_line() for b in boards) if known_hosts is None else known_hosts)
        lines = [
            "[defaults]",
            f'user = "{getpass.getuser()}"',
            f'identity_file = "{self.client_keys[key]}"',
            f'known_hosts = "{kh}"',
            f'python = "{sys.executable}"',
            "connect_timeout = 10.0",
            "retries = 2",
            "retry_delay = 0.2",
            "smoke_frames = 4096",
            extra,
            "",
        ]
        for b in boards:
            lines += [
                f"[boards.{b.name}]",
                'host = "127.0.0.1"',
                f"port = {b.port}",
                f'profile = "{profile}"',
                f'install_dir = "{b.install_dir}"',
                f"groups = {b.groups!r}".replace("'", '"'),
                "",
            ]
        path = self.root / name
        path.write_text("\n".join(lines))
        return path

    def stop(self) -> None:
        for b in self.boards.values():
            b.stop()


@pytest.fixture
def fleet(sshd_available: bool, client_keys: dict[str, Path], tmp_path: Path):
    f = Fleet(tmp_path / "fleet", client_keys)
    yield f
    f.stop()
