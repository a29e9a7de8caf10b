"""Push, status, rollback and logs against real sshd processes on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import getpass
import io
import json
import os
import tarfile
from pathlib import Path

from click.testing import CliRunner
from conftest import Fleet, make_bundle, make_onnx, make_trt_export

from acids_deploy.bundle import artifact_from_record, build_bundle
from acids_deploy.cli import main_group
from acids_deploy.inventory import load_inventory
from acids_deploy.profiles import get_profile
from acids_deploy.push import BundleRef, PushOptions, push_board


def run_cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main_group, list(args), input=input, catch_exceptions=False)


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def members_text(tar: Path) -> dict[str, str]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read().decode() for m in tf.getmembers() if m.isfile()}


def bundle_ref(rec: dict) -> BundleRef:
    from acids_deploy.bundle import check_bundle_tar

    path = Path(rec["path"])
    return BundleRef(path, rec["sha256"], rec["id"], check_bundle_tar(path)["profile"], path.stat().st_size)


def current_of(install: Path) -> str:
    return os.path.basename(os.readlink(install / "current"))


def test_full_push_then_unchanged_status_logs(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory()
    bundle = make_bundle(tmp_path, gain_onnx, "b1.tar")

    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["kind"] == "deployment" and rec["status"] == "deployed"
    assert rec["release"] == bundle["id"] and rec["uploaded_bytes"] == bundle["bytes"]
    assert rec["smoke"]["ok"] and rec["smoke"]["rtf"] > 0
    assert current_of(board.install_dir) == bundle["id"]
    rel = board.install_dir / "releases" / bundle["id"]
    assert (rel / "models" / "gain.onnx").read_bytes() == gain_onnx.read_bytes()
    assert not list((board.install_dir / "incoming").iterdir())  # the tar is gone once unpacked
    assert "pi1" in res.stderr and "deployed" in res.stderr  # the summary table

    # the same bundle again: nothing transferred, nothing switched
    res = run_cli("push", "-i", str(inv), "-t", "pi1", input=json.dumps(bundle) + "\n")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["status"] == "unchanged" and rec["uploaded_bytes"] == 0

    res = run_cli("status", "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    (st,) = records(res)
    assert st["current"] == bundle["id"] and st["current_problem"] is None

    res = run_cli("logs", "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0
    events = [json.loads(line.split(": ", 1)[1])["event"] for line in res.stdout.splitlines()]
    assert events[:2] == ["installed", "switch"]

    res = run_cli("boards", "-i", str(inv))
    assert res.exit_code == 0, res.stderr
    (b,) = records(res)
    assert b["kind"] == "board" and b["reachable"] is True


def test_interrupted_push_resumes(fleet: Fleet, tmp_path: Path):
    board = fleet.board("pi1")
    inv = load_inventory(fleet.inventory())
    model = make_onnx(tmp_path / "m" / "big.onnx", extra_floats=2_000_000)  # ~8 MB
    bundle = make_bundle(tmp_path, model, "big.tar")
    ref = bundle_ref(bundle)

    def cut(n: int, total: int) -> None:
        if n >= 3_000_000:
            raise ConnectionResetError("link dropped (test)")

    rec = push_board(inv.boards["pi1"], ref, PushOptions(), on_progress=cut)
    assert rec["status"] == "failed" and rec["exit"] == 75, rec
    part = board.install_dir / "incoming" / f"{ref.sha256}.tar.part"
    done = part.stat().st_size
    assert 0 < done < ref.size

    rec = push_board(inv.boards["pi1"], ref, PushOptions())
    assert rec["status"] == "deployed", rec
    assert rec["resumed_from"] == done
    assert rec["uploaded_bytes"] == ref.size - done
    assert current_of(board.install_dir) == ref.id


def test_changed_or_unknown_host_key_refused(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    other = fleet.board("pi2")
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    # pi2's key pinned for pi1's address: a changed key
    swapped = (
        board.known_hosts_line().split()[0] + " " + " ".join(other.known_hosts_line().split()[1:]) + "\n"
    )
    inv = fleet.inventory([board], known_hosts=swapped)
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 69
    (rec,) = records(res)
    assert rec["status"] == "failed" and "HOST KEY CHANGED" in rec["error"]
    assert not board.install_dir.exists()  # nothing was touched

    inv = fleet.inventory([board], known_hosts="", name="unknown.toml")
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 69
    assert "no pinned host key" in records(res)[0]["error"]
    assert "no pinned host key" in res.stderr
    assert not board.install_dir.exists()
    assert inv.with_name("unknown.toml.known_hosts").read_text() == ""  # never auto-added


def test_aes_gcm_negotiated_first(fleet: Fleet):
    """AES-GCM is offered first (faster uploads, see ssh._Transport); OpenSSH takes it."""
    from acids_deploy.ssh import BoardConnection

    fleet.board("pi1")
    board = load_inventory(fleet.inventory()).boards["pi1"]
    with BoardConnection(board) as conn:
        transport = conn.client.get_transport()
        assert transport.local_cipher == transport.remote_cipher == "aes128-gcm@openssh.com"


def test_wrong_client_key(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory(key="wrong")
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 69
    assert "authentication failed" in records(res)[0]["error"]
    assert not board.install_dir.exists()


def test_unreachable_board_exits_75(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory()
    board.stop()  # the port is closed now
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 75
    assert "unreachable after 2 attempt" in records(res)[0]["error"]
    res = run_cli("boards", "-i", str(inv))
    assert res.exit_code == 75 and records(res)[0]["reachable"] is False


def test_silent_board_and_hung_command_time_out(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    """A board that accepts TCP but never speaks SSH: each attempt times out, then exit 75. A command
    that hangs past its timeout is reported as a timeout (75), not waited for."""
    import socket
    import threading
    import time

    from acids_deploy.ssh import BoardConnection, Unreachable

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # accepted, never answered
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        (tmp_path / "kh").write_text("")
        inv = tmp_path / "silent.toml"
        inv.write_text(
            f'[boards.mute]\nhost = "127.0.0.1"\nport = {silent.getsockname()[1]}\nprofile = "desktop"\n'
            f'known_hosts = "kh"\nidentity_file = "{fleet.client_keys["good"]}"\n'
            "connect_timeout = 1.0\nretries = 2\nretry_delay = 0.1\n"
        )
        bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
        t0 = time.monotonic()
        res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "mute")
        took = time.monotonic() - t0
        assert res.exit_code == 75, res.stderr
        assert "unreachable after 2 attempt(s)" in records(res)[0]["error"]
        assert len(held) == 2 and took < 8  # two attempts of about connect_timeout each
    finally:
        stop.set()
        thread.join(2)
        for c in held:
            c.close()
        silent.close()

    fleet.board("pi1")
    board = load_inventory(fleet.inventory()).boards["pi1"]
    with BoardConnection(board) as conn:
        t0 = time.monotonic()
        try:
            conn.run(["sleep", "30"], timeout=1.0)
        except Unreachable as e:
            assert "timed out after 1 s" in e.message and int(e.code) == 75
        else:
            raise AssertionError("a hung command was not timed out")
        assert time.monotonic() - t0 < 10


def test_corrupted_upload_and_damaged_release_detected(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory()
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    # a partial upload whose bytes are wrong: resumed, then caught by the sha256 check, then redone
    incoming = board.install_dir / "incoming"
    incoming.mkdir(parents=True)
    (incoming / f"{bundle['sha256']}.tar.part").write_bytes(b"\0garbage" * 200)
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["status"] == "deployed" and "checksum mismatch" in rec["checksum_retry"]
    assert rec["resumed_from"] == 1600
    assert "checksum mismatch" in res.stderr

    # a file of the installed release changed on the board: status says so, a re-push repairs it
    model = board.install_dir / "releases" / bundle["id"] / "models" / "gain.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")
    res = run_cli("status", "-i", str(inv), "-t", "pi1")
    assert "checksum mismatch: models/gain.onnx" in records(res)[0]["current_problem"]
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["status"] == "deployed" and "checksum mismatch" in rec["repaired"]
    assert model.read_bytes() == gain_onnx.read_bytes()


def test_failing_smoke_test_rolls_back(fleet: Fleet, gain_onnx: Path, nan_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory()
    good = make_bundle(tmp_path, gain_onnx, "good.tar")
    bad = make_bundle(tmp_path, nan_onnx, "bad.tar")
    assert run_cli("push", good["path"], "-i", str(inv), "-t", "pi1").exit_code == 0

    res = run_cli("push", bad["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 65
    (rec,) = records(res)
    assert rec["status"] == "rolled-back" and rec["current"] == good["id"]
    assert "not finite" in rec["error"] and f"rolled back to {good['id']}" in rec["error"]
    assert current_of(board.install_dir) == good["id"]
    assert "rolled back" in res.stderr

    # a manual rollback skips the release that failed its smoke test: nothing earlier is left here
    res = run_cli("rollback", "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 65, res.stderr
    line = "pi1: rollback failed: nothing to roll back to: no earlier release on this board"
    assert f"{line} (current: {good['id']})" in res.stderr
    assert records(res)[0]["status"] == "failed" and records(res)[0]["exit"] == 65
    res = run_cli("rollback", "-i", str(inv), "-t", "pi1", "--to", "0123456789abcdef")
    assert res.exit_code == 65 and "no release 0123456789abcdef on this board" in res.stderr
    third = make_bundle(tmp_path, make_onnx(tmp_path / "m3" / "g3.onnx"), "third.tar")
    assert run_cli("push", third["path"], "-i", str(inv), "-t", "pi1").exit_code == 0
    res = run_cli("rollback", "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["release"] == good["id"] and rec["previous"] == third["id"] and rec["smoke"]["ok"]
    assert current_of(board.install_dir) == good["id"]


def test_two_boards_in_parallel(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    a = fleet.board("pi1", groups=["studio"])
    b = fleet.board("pi2", groups=["studio"])
    inv = fleet.inventory()
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "studio", "--parallel", "2")
    assert res.exit_code == 0, res.stderr
    recs = records(res)
    assert [r["board"] for r in recs] == ["pi1", "pi2"]
    assert all(r["status"] == "deployed" for r in recs)
    assert current_of(a.install_dir) == current_of(b.install_dir) == bundle["id"]
    table = [ln for ln in res.stderr.splitlines() if ln.startswith(("board", "pi1", "pi2"))]
    assert len(table) == 3


def test_systemd_unit_uses_the_boards_install_dir_user_and_python(
    fleet: Fleet, gain_onnx: Path, nan_onnx: Path, tmp_path: Path
):
    """The unit is rendered at push time from the inventory (not /opt/acids), again on rollback, and a
    value that cannot go into a unit file is refused without failing the push."""
    import shutil
    import subprocess
    import sys

    a = fleet.board("pi1")
    b = fleet.board("pi2")
    a.install_dir = a.dir / "srv" / "acids-studio"
    # spaces, quotes, $( ) and ; reach the board as one argument (shell quoting); no safe way to put
    # such a path into a unit file, so that board gets none, and says why
    b.install_dir = b.dir / "home" / "it's $(touch PWNED) a;b"
    inv = fleet.inventory()
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    template = members_text(Path(bundle["path"]))["systemd/acids-runner.service.in"]
    assert "/opt/acids" not in template and "@INSTALL_DIR@/current" in template

    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "pi1,pi2")
    assert res.exit_code == 0, res.stderr
    ra, rb = records(res)
    unit_path = a.install_dir / "systemd" / "acids-runner.service"
    assert ra["status"] == "deployed" and ra["unit"] == str(unit_path)
    unit = unit_path.read_text()
    lines = unit.splitlines()
    assert f"WorkingDirectory={a.install_dir}/current" in lines
    assert f"User={getpass.getuser()}" in lines
    (exec_line,) = [ln for ln in lines if ln.startswith("ExecStart=")]
    assert f"| {sys.executable} run.py --stdin |" in exec_line
    assert "/opt/acids" not in unit and "@" not in unit.replace(f"{a.install_dir}", "")
    assert rb["status"] == "deployed" and "unit_skipped" in rb and "install_dir" in rb["unit_skipped"]
    assert not (b.install_dir / "systemd").exists() and current_of(b.install_dir) == bundle["id"]
    assert not list(Path.home().glob("PWNED")) and not list(b.dir.rglob("PWNED"))
    assert "systemd unit not written" in res.stderr

    if shutil.which("systemd-analyze"):  # systemd's own parser accepts it (warnings only for missing deps)
        check = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True)
        assert "Failed to parse" not in check.stderr and "Unknown key" not in check.stderr, check.stderr

    # a bad release rolls back; the unit still names the board's install dir (rendered from the rollback
    # target's template), and `rollback` renders it as well
    bad = make_bundle(tmp_path, nan_onnx, "bad.tar")
    res = run_cli("push", bad["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 65 and records(res)[0]["status"] == "rolled-back"
    assert unit_path.read_text() == unit
    unit_path.unlink()
    third = make_bundle(tmp_path, make_onnx(tmp_path / "m3" / "gain.onnx", extra_floats=10), "c.tar")
    assert run_cli("push", third["path"], "-i", str(inv), "-t", "pi1").exit_code == 0
    unit_path.unlink()
    res = run_cli("rollback", "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    assert records(res)[0]["unit"] == str(unit_path) and unit_path.read_text() == unit


def test_service_reloaded_and_restarted_on_switch_and_rollback(
    fleet: Fleet, gain_onnx: Path, nan_onnx: Path, tmp_path: Path
):
    """With `service` in the inventory: the unit is written under that name, systemd reloads when it
    changed, the service restarts after every switch (and after the automatic rollback), `logs` shows
    its journal; a push with nothing to do touches nothing."""
    board = fleet.board("pi1")
    inv = fleet.inventory(extra='service = "acids-synth"')
    good = make_bundle(tmp_path, gain_onnx, "good.tar")
    res = run_cli("push", good["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 0, res.stderr
    unit = board.install_dir / "systemd" / "acids-synth.service"
    assert records(res)[0]["unit"] == str(unit) and unit.is_file()
    assert board.calls() == ["daemon-reload", "restart -- acids-synth"]

    assert run_cli("push", good["path"], "-i", str(inv), "-t", "pi1").exit_code == 0  # unchanged
    assert len(board.calls()) == 2

    bad = make_bundle(tmp_path, nan_onnx, "bad.tar")
    res = run_cli("push", bad["path"], "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 65 and records(res)[0]["status"] == "rolled-back"
    # the unit text did not change (same template, same board): no reload, two restarts
    assert board.calls()[2:] == ["restart -- acids-synth", "restart -- acids-synth"]
    assert current_of(board.install_dir) == good["id"]

    res = run_cli("logs", "-i", str(inv), "-t", "pi1", "-n", "7")
    assert res.exit_code == 0
    assert "pi1: journal: journalctl -u acids-synth -n 7 --no-pager" in res.stdout.splitlines()

    res = run_cli("push", good["path"], "-i", str(inv), "-t", "pi1", "--dry-run")
    plan = records(res)[0]["plan"]
    assert f"write {unit} (User={getpass.getuser()})" in plan and "systemctl restart acids-synth" in plan


def test_unit_template_rendering_refuses_injection():
    import importlib.util

    from acids_deploy.bundle import systemd_unit

    spec = importlib.util.spec_from_file_location("acids_agent", Path(__file__).parents[1] / "src" /
                                                  "acids_deploy" / "board" / "agent.py")  # fmt: skip
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    template = systemd_unit(get_profile("rpi-bookworm"), [{"sample_rate": 44100}])
    text = agent.render_unit(template, "/data/acids", "synth", "/usr/bin/python3", "acids-runner")
    assert "WorkingDirectory=/data/acids/current" in text and "User=synth" in text and "-r 44100" in text
    for args in (
        ("/data/acids", "synth\nExecStartPre=/bin/rm -rf /", "python3", "acids-runner"),
        ("/data/acids", "synth", "python3; rm -rf /", "acids-runner"),
        ("/data/%h", "synth", "python3", "acids-runner"),
        ("relative/dir", "synth", "python3", "acids-runner"),
        ("/data/acids", "-synth", "python3", "acids-runner"),
    ):
        try:
            agent.render_unit(template, *args)
        except agent.AgentError as e:
            assert e.code == agent.EXIT_UNSAFE
        else:
            raise AssertionError(f"accepted {args!r}")


def test_dry_run_touches_nothing(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("pi1")
    inv = fleet.inventory()
    board.stop()  # a dry run does not even connect
    bundle = make_bundle(tmp_path, gain_onnx, "b.tar")
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "all", "--dry-run")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    assert rec["status"] == "planned" and any("smoke test" in s for s in rec["plan"])
    assert "switch" in res.stderr
    assert not board.install_dir.exists()


def _evil_tar(path: Path, good_tar: Path) -> None:
    """The good bundle plus a member ``../evil.txt``."""
    with tarfile.open(good_tar) as src, tarfile.open(path, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        info = tarfile.TarInfo("../evil.txt")
        info.size = 5
        dst.addfile(info, io.BytesIO(b"owned"))


def test_tar_with_dotdot_member_refused(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    from acids_deploy.push import BoardSession
    from acids_deploy.ssh import BoardConnection

    board = fleet.board("pi1")
    inv = fleet.inventory()
    good = make_bundle(tmp_path, gain_onnx, "good.tar")
    evil = tmp_path / "evil.tar"
    _evil_tar(evil, Path(good["path"]))

    # the host refuses it before anything is sent
    res = run_cli("push", str(evil), "-i", str(inv), "-t", "pi1")
    assert res.exit_code == 65
    assert "unsafe member '../evil.txt'" in res.stderr
    assert not board.install_dir.exists()

    # and the board's agent refuses it too, should such a tar arrive anyway
    from acids_deploy.bundle import sha256_file

    sha = sha256_file(evil)
    with BoardConnection(load_inventory(inv).boards["pi1"]) as conn:
        s = BoardSession(conn)
        s.ensure_agent()
        conn.upload_resumable(evil, f"{board.install_dir}/incoming/{sha}.tar.part")
        status, obj = s.call("install", sha, "evil1")
    assert status == 4 and "outside the release" in obj["error"]
    assert not (board.install_dir / "releases" / "evil.txt").exists()
    assert not (board.install_dir / "releases" / "evil1").exists()
    assert not list(board.install_dir.rglob("evil.txt"))


FAKE_TRTEXEC = """#!/bin/sh
# stands in for TensorRT 8.2's trtexec: prints its banner (it refuses --version but names itself),
# writes the --saveEngine file with its arguments, counts its runs
case "$1" in --version)
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --version"
  echo "&&&& FAILED TensorRT.trtexec [TensorRT v8201] # trtexec --version"; exit 1;;
esac
for a in "$@"; do
  case "$a" in --saveEngine=*) out="${a#--saveEngine=}";; esac
done
echo run >> "$(dirname "$0")/trtexec.calls"
printf 'engine for %s\\n' "$*" > "$out"
"""


def test_jetson_engine_built_on_board_and_cached(fleet: Fleet, gain_onnx: Path, tmp_path: Path):
    board = fleet.board("nano")
    trtexec = board.dir / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC)
    trtexec.chmod(0o755)
    inv = fleet.inventory(profile="jetson-jp4", extra=f'trtexec = "{trtexec}"')
    art = make_trt_export(gain_onnx, "fp32", flags=("--noTF32",))
    bundle = build_bundle([artifact_from_record(art, get_profile("jetson-jp4"))], get_profile("jetson-jp4"),
                          tmp_path / "nano.tar", deps=False)  # fmt: skip
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "nano")
    assert res.exit_code == 0, res.stderr
    (rec,) = records(res)
    # the board's TensorRT, read from trtexec, keys the cache; the record's precision is used
    assert rec["tensorrt"] == "8.2.1" and rec["engines"]["tensorrt_source"] == "trtexec"
    (engine,) = rec["engines"]["engines"]
    assert engine["built"] and engine["key"].startswith(bundle["models"][0]["sha256"][:16] + "-trt8.2.1-")
    assert "-fp32-" in engine["key"] and engine["command_from"] == "acids-export recipe models/gain.trt.json"
    assert "TensorRT 8.2.1 (from trtexec)" in res.stderr
    release = board.install_dir / "releases" / bundle["id"]
    argv = (release / "models" / "gain.onnx.plan").read_text().split()  # the link into engine-cache/
    assert "--fp16" not in argv and "--noTF32" in argv and "--maxShapes=x:1x1x1024" in argv  # the recipe's
    assert f"--onnx={release}/models/gain.onnx" in argv
    assert f"--timingCacheFile={board.install_dir}/engine-cache/timing-trt8.2.1-x86_64.cache" in argv
    # no tensorrt module for this Python: the engine check says so instead of passing silently
    check = rec["engine_check"]["models"][0]
    assert check["status"] == "not verified" and "tensorrt does not import" in check["reason"]
    assert "NOT VERIFIED" in res.stderr
    # the smoke test ran on onnxruntime, and says why
    assert rec["smoke"]["models"][0]["backend"] == "onnxruntime"
    assert (release / "models" / "gain.ref.npz").is_file()
    # forced re-push: the engine comes from the cache, trtexec does not run again
    res = run_cli("push", bundle["path"], "-i", str(inv), "-t", "nano", "--force")
    assert res.exit_code == 0, res.stderr
    assert records(res)[0]["engines"]["engines"][0]["built"] is False
    assert (board.dir / "trtexec.calls").read_text().count("run") == 1
    assert records(run_cli("status", "-i", str(inv), "-t", "nano"))[0]["current_problem"] is None
    log = [json.loads(line) for line in (board.install_dir / "logs" / "deploy.log").read_text().splitlines()]
    engines = [e for e in log if e["event"] == "engines"]
    assert engines[0]["tensorrt"] == "8.2.1" and engines[0]["tensorrt_source"] == "trtexec"


def test_engine_that_fails_its_reference_check_is_not_switched():
    """push's side of `run.py --verify`: a failed check stops the push before the switch (exit 65)."""
    import pytest

    from acids_core.errors import DataError
    from acids_deploy.inventory import Board
    from acids_deploy.push import _engines

    class Conn:
        def run_json(self, argv, timeout=None):
            assert argv[-1] == "--verify"
            failed = {"model": "gain", "status": "failed", "error": "engine differs: max |error| 0.1"}
            return 3, {"ok": False, "models": [failed]}

    class Session:
        board = Board(name="nano", host="127.0.0.1", profile="jetson-jp4", known_hosts="kh")
        root, conn = "/opt/acids", Conn()

        def call_ok(self, *args, timeout=None):
            return {"engines": [], "tensorrt": "10.3.0", "tensorrt_source": "dpkg tensorrt"}

    rec: dict = {}
    ref = BundleRef(Path("b.tar"), "0" * 64, "abc", "jetson-jp4", 1)
    with pytest.raises(DataError, match=r"fails its reference check: gain: engine differs.*not switched"):
        _engines(Session(), ref, rec)
    assert rec["tensorrt"] == "10.3.0" and rec["engine_check"]["ok"] is False
