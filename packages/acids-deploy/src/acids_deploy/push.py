"""Push a bundle to boards: upload, verify, unpack, switch, smoke test, roll back.

Per board (boards run in parallel threads, each with its own SSH connection):

1. connect (pinned host key), install the content-addressed agent script under ``.acids/``;
2. probe: is this release already there and intact? Then nothing is uploaded;
3. upload ``incoming/<tar sha256>.tar.part``, resuming a partial one; the agent checks the sha256 (a
   mismatch deletes the part, and the upload restarts once from zero), unpacks into
   ``releases/.<id>.tmp`` refusing any member that would land outside it, checks every file against the
   manifest, and renames the directory to ``releases/<id>``;
4. TensorRT profiles: build or reuse the engine with the recipe's trtexec line (cache key: onnx
   sha256, the TensorRT version read on the board, device, precision, build flags), then compare it with
   the bundle's reference npz (``run.py --verify``; "not verified" where ``tensorrt`` does not import);
5. switch ``current`` atomically (a new symlink renamed over the old one), write the systemd unit
   rendered for this board (install dir, user, python from the inventory), restart the service;
6. smoke test: the runner processes a buffer and reports its real-time factor; if it fails, switch back
   to the previous release, restart the service again, and say so;
7. prune old releases.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acids_core.errors import AcidsError, DataError, Exit
from acids_core.log import get_logger
from acids_core.records import make_record
from acids_deploy.bundle import board_file
from acids_deploy.inventory import Board
from acids_deploy.ssh import BoardConnection, RemoteError, Unreachable

log = get_logger("deploy.push")

AGENT_EXIT_CHECKSUM = 3
AGENT_EXIT_UNSAFE = 4
AGENT_EXIT_NO_RELEASE = 6  # rollback: nothing to roll back to, or no such release (board/agent.py)
DEFAULT_SERVICE = "acids-runner"  # the unit's name when the inventory names no service


@dataclass(frozen=True)
class BundleRef:
    """The bundle to push: its tar, the tar's sha256, its release id and profile."""

    path: Path
    sha256: str
    id: str
    profile: str
    size: int


@dataclass
class PushOptions:
    dry_run: bool = False
    force: bool = False  # redo the switch and smoke test even when the release is already current
    smoke: bool = True
    max_rtf: float | None = None


class SmokeFailed(AcidsError):
    code = Exit.DATA


def agent_path(board: Board) -> tuple[str, bytes]:
    data = board_file("agent.py")
    name = f"agent-{hashlib.sha256(data).hexdigest()[:12]}.py"
    return posixpath.join(board.install_dir, ".acids", name), data


class BoardSession:
    """The life-cycle operations on one connected board (push, status, rollback, logs)."""

    def __init__(self, conn: BoardConnection) -> None:
        self.conn = conn
        self.board = conn.board
        self.root = self.board.install_dir
        self.agent = ""

    def ensure_agent(self) -> None:
        path, data = agent_path(self.board)
        if self.conn.remote_size(path) != len(data):
            incoming = posixpath.join(self.root, "incoming")
            self.conn.run(["mkdir", "-p", posixpath.dirname(path), incoming], check=True)
            self.conn.put_bytes(data, path)
        self.agent = path

    def call(self, command: str, *args: str, timeout: float | None = None) -> tuple[int, dict[str, Any]]:
        return self.conn.run_json([self.board.python, self.agent, command, self.root, *args], timeout=timeout)

    def call_ok(self, command: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
        status, obj = self.call(command, *args, timeout=timeout)
        if status != 0:
            raise RemoteError(f"{self.board.name}: agent {command} failed: {obj.get('error', obj)}")
        return obj

    def render_unit(self) -> dict[str, Any]:
        """Render the current release's systemd unit for this board (its install dir, user, python and
        service name from the inventory) into ``INSTALL_DIR/systemd/SERVICE.service``."""
        b = self.board
        unit = self.call_ok("unit", b.user, b.python, b.service or DEFAULT_SERVICE)
        if unit.get("skipped"):
            log.warning("%s: systemd unit not written: %s", b.name, unit["skipped"])
        return unit

    def restart_service(self) -> dict[str, Any]:
        """After a switch: write the unit for the new ``current``, reload systemd when the unit changed,
        and restart the inventory's service (if it names one). Returns the agent's ``unit`` answer."""
        unit = self.render_unit()
        if self.board.service:
            if unit.get("changed"):
                self.conn.run(["systemctl", "daemon-reload"], check=True)
            self.conn.run(["systemctl", "restart", "--", self.board.service], check=True)
        return unit

    def smoke(self, max_rtf: float | None) -> dict[str, Any]:
        run = posixpath.join(self.root, "current", "run.py")
        argv = [self.board.python, run, "--smoke", "--frames", str(self.board.smoke_frames)]
        if max_rtf:
            argv += ["--max-rtf", str(max_rtf)]
        try:
            status, report = self.conn.run_json(argv)
        except RemoteError as e:
            return {"ok": False, "error": str(e)}
        if status != 0 and report.get("ok"):
            report["ok"] = False
        if not report.get("ok"):
            errors = [f"{m['model']}: {m['error']}" for m in report.get("models", []) if m.get("error")]
            report.setdefault("error", "; ".join(errors) or f"runner exit {status}")
        return report


def plan_lines(board: Board, bundle: BundleRef, opts: PushOptions) -> list[str]:
    """What a push to ``board`` will do, for --dry-run."""
    root = board.install_dir
    part = posixpath.join(root, "incoming", f"{bundle.sha256}.tar.part")
    rel = posixpath.join(root, "releases", bundle.id)
    steps = [
        f"connect {board.address} (host key pinned in {board.known_hosts})",
        f"upload {bundle.path.name} ({bundle.size / 1e6:.1f} MB) to {part} unless release {bundle.id} "
        "is there (resumes a partial upload)",
        f"verify sha256 {bundle.sha256[:16]}…, unpack into {rel} with path checks, verify the manifest",
    ]
    if board.get_profile().tensorrt:
        steps.append(
            "read the board's TensorRT version; build or reuse the engine (the recipe's trtexec line); "
            "compare it with the reference npz (not switched if it differs)"
        )
    steps.append(f"switch {posixpath.join(root, 'current')} -> releases/{bundle.id}")
    service = board.service or DEFAULT_SERVICE
    steps.append(f"write {posixpath.join(root, 'systemd', service + '.service')} (User={board.user})")
    if board.service:
        steps.append(f"systemctl restart {board.service}")
    if opts.smoke:
        steps.append(f"smoke test: {board.python} current/run.py --smoke; roll back if it fails")
    steps.append(f"keep the newest {board.keep_releases} releases")
    return steps


def _base_record(board: Board, bundle: BundleRef | None) -> dict[str, Any]:
    return make_record(
        "deployment",
        board=board.name,
        host=board.host,
        port=board.port,
        profile=board.profile,
        release=bundle.id if bundle else None,
        bundle_sha256=bundle.sha256 if bundle else None,
    )


def _fail(rec: dict[str, Any], e: AcidsError, t0: float) -> dict[str, Any]:
    rec.update(status="failed", error=e.message, exit=int(e.code), seconds=round(time.monotonic() - t0, 3))
    return rec


def push_board(
    board: Board,
    bundle: BundleRef,
    opts: PushOptions,
    on_progress: Any = None,
) -> dict[str, Any]:
    """Push ``bundle`` to one board; return its ``deployment`` record (never raises AcidsError)."""
    rec = _base_record(board, bundle)
    t0 = time.monotonic()
    if board.profile != bundle.profile:
        e = DataError(f"{board.name}: is a {board.profile} board, the bundle is for {bundle.profile}")
        return _fail(rec, e, t0)
    if opts.dry_run:
        rec.update(status="planned", plan=plan_lines(board, bundle, opts), exit=0)
        return rec
    try:
        with BoardConnection(board) as conn:
            s = BoardSession(conn)
            s.ensure_agent()
            probe = s.call_ok("probe", bundle.sha256, bundle.id)
            rec.update(
                previous=probe.get("current"), python=probe.get("python"), machine=probe.get("machine")
            )
            intact = probe["release_exists"] and not probe["release_problem"]
            if probe["release_exists"] and probe["release_problem"]:
                log.warning(
                    "%s: release %s is damaged (%s); uploading it again",
                    board.name,
                    bundle.id,
                    probe["release_problem"],
                )
                rec["repaired"] = probe["release_problem"]
            if intact and probe.get("current") == bundle.id and not opts.force:
                rec.update(status="unchanged", uploaded_bytes=0, exit=0)
                rec["seconds"] = round(time.monotonic() - t0, 3)
                return rec
            if not intact:
                _upload_and_install(s, bundle, rec, on_progress)
            else:
                rec.update(uploaded_bytes=0)
            if board.get_profile().tensorrt is not None:
                _engines(s, bundle, rec)
            switched = s.call_ok("switch", bundle.id)
            rec["previous"] = switched.get("previous")
            unit = s.restart_service()
            rec["unit"] = unit.get("unit")
            if unit.get("skipped"):
                rec["unit_skipped"] = unit["skipped"]
            if opts.smoke:
                report = s.smoke(opts.max_rtf)
                rec["smoke"] = report
                if not report.get("ok"):
                    _roll_back_after_smoke(s, rec, report)
                    raise SmokeFailed(rec["error"])
            s.call_ok("prune", str(board.keep_releases))
            rec.update(status="deployed", exit=0)
    except SmokeFailed as e:
        rec.update(exit=int(e.code))
    except AcidsError as e:
        _fail(rec, e, t0)
    rec["seconds"] = round(time.monotonic() - t0, 3)
    return rec


def _engines(s: BoardSession, bundle: BundleRef, rec: dict[str, Any]) -> None:
    """Build or reuse the TensorRT engines, then compare them with the bundle's references.

    The TensorRT version is the board's own (read there); the profile's is documentation. An engine that
    differs from its references fails the push before the switch (exit 65); where ``tensorrt`` does not
    import on the board the check says "not verified", and why.
    """
    board = s.board
    trt = board.get_profile().tensorrt
    assert trt is not None
    engines = s.call_ok("engine", bundle.id, board.trtexec or trt.trtexec, timeout=3600)
    rec["engines"] = engines
    if engines.get("skipped"):
        log.warning("%s: no TensorRT engine: %s", board.name, engines["skipped"])
        rec["engine_check"] = {"status": "not verified", "reason": f"no engine: {engines['skipped']}"}
        return
    version = engines.get("tensorrt")
    rec["tensorrt"] = version
    if version is None:
        log.warning(
            "%s: could not read the board's TensorRT version (%s); engines are rebuilt, not cached",
            board.name,
            engines.get("tensorrt_source"),
        )
    else:
        note = "" if trt.documents(version) else f" (profile {board.profile} documents {trt.expected})"
        log.info("%s: TensorRT %s (from %s)%s", board.name, version, engines.get("tensorrt_source"), note)
    for e in engines.get("engines", []):
        how = f"built in {e['build_s']} s" if e.get("built") else "reused from the cache"
        log.info("%s: engine %s %s: %s [trtexec line: %s]", board.name, e["model"], e["precision"], how,
                 e.get("command_from"))  # fmt: skip
    run = posixpath.join(s.root, "releases", bundle.id, "run.py")
    try:
        status, report = s.conn.run_json([board.python, run, "--verify"], timeout=600)
    except RemoteError as e:
        status, report = 3, {"ok": False, "models": [], "error": e.message}
    rec["engine_check"] = report
    checks = report.get("models", [])
    failed = [m for m in checks if m.get("status") == "failed"]
    if status != 0 or failed or not report.get("ok", False):
        why = "; ".join(f"{m['model']}: {m.get('error')}" for m in failed) or report.get("error", status)
        raise DataError(f"{board.name}: the TensorRT engine fails its reference check: {why}; not switched")
    for m in checks:
        if m["status"] == "verified":
            log.info("%s: engine %s matches %s (max |error| %.3g <= atol %g)", board.name, m["model"],
                     m["reference"], m["max_abs_error"], m["atol"])  # fmt: skip
        else:
            log.warning("%s: engine %s NOT VERIFIED: %s", board.name, m["model"], m.get("reason"))
    if not checks:
        rec["engine_check"]["status"] = "not verified"
        rec["engine_check"]["reason"] = "the bundle has no reference (.ref.npz) for its models"
        log.warning("%s: engines NOT VERIFIED: the bundle has no reference outputs", board.name)


def _upload_and_install(s: BoardSession, bundle: BundleRef, rec: dict[str, Any], on_progress: Any) -> None:
    board = s.board
    part = posixpath.join(s.root, "incoming", f"{bundle.sha256}.tar.part")
    sent_total = 0
    for attempt in (1, 2):
        t_up = time.monotonic()
        resumed_from, sent = s.conn.upload_resumable(bundle.path, part, on_progress)
        sent_total += sent
        dt = time.monotonic() - t_up
        if resumed_from:
            log.info("%s: resumed the upload at %.1f MB", board.name, resumed_from / 1e6)
            rec["resumed_from"] = resumed_from
        if sent:
            rec["upload_mb_s"] = round(sent / 1e6 / max(dt, 1e-6), 2)
        status, obj = s.call("install", bundle.sha256, bundle.id)
        if status == 0:
            rec["uploaded_bytes"] = sent_total
            return
        if status == AGENT_EXIT_CHECKSUM and attempt == 1:
            log.warning("%s: %s; uploading again from the start", board.name, obj.get("error"))
            rec["checksum_retry"] = obj.get("error")
            continue
        if status == AGENT_EXIT_UNSAFE:
            raise DataError(f"{board.name}: the board refused the bundle: {obj.get('error')}")
        if status == AGENT_EXIT_CHECKSUM:
            raise DataError(f"{board.name}: {obj.get('error')} (twice; is the disk or the link faulty?)")
        raise RemoteError(f"{board.name}: install failed: {obj.get('error', obj)}")


def _roll_back_after_smoke(s: BoardSession, rec: dict[str, Any], report: dict[str, Any]) -> None:
    board = s.board
    previous = rec.get("previous")
    reason = report.get("error", "smoke test failed")
    if previous and previous != rec["release"]:
        s.call_ok("rollback", previous, rec["release"])
        s.restart_service()
        rec.update(status="rolled-back", current=previous)
        rec["error"] = f"smoke test failed ({reason}); rolled back to {previous}"
    else:
        rec.update(status="failed", current=rec["release"])
        rec["error"] = f"smoke test failed ({reason}); no earlier release to roll back to"
    log.error("%s: %s", board.name, rec["error"])


def push_many(
    boards: list[Board],
    bundle: BundleRef,
    opts: PushOptions,
    parallel: int = 4,
) -> list[dict[str, Any]]:
    """Push to every board (``parallel`` at a time); records come back in inventory order."""
    lock = threading.Lock()
    done: dict[str, float] = {}

    def progress_for(board: Board) -> Any:
        def cb(n: int, total: int) -> None:
            with lock:
                last = done.get(board.name, 0.0)
                now = time.monotonic()
                if now - last >= 5.0 or n == total:
                    done[board.name] = now
                    log.info("%s: uploaded %.1f/%.1f MB", board.name, n / 1e6, total / 1e6)

        return cb

    def one(board: Board) -> dict[str, Any]:
        return push_board(board, bundle, opts, progress_for(board))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, boards))


def exit_code(records: list[dict[str, Any]]) -> int:
    """The command's exit: 0 if every board is fine; else the most serious board failure.

    A bad bundle (65) outranks a refused board (69), which outranks an unreachable one (75, retryable).
    """
    codes = {int(r.get("exit", 0)) for r in records}
    for code in (Exit.DATA, Exit.UNAVAILABLE, Exit.TEMPFAIL, Exit.USAGE, Exit.BUG):
        if int(code) in codes:
            return int(code)
    return max(codes | {0})


def summary_table(records: list[dict[str, Any]]) -> str:
    """A per-board summary, one line per board."""
    head = ("board", "status", "release", "uploaded", "RTF", "time", "note")
    rows = [head]
    for r in records:
        smoke = r.get("smoke") or {}
        rtf = smoke.get("rtf")
        up = r.get("uploaded_bytes")
        rows.append(
            (
                r["board"],
                r.get("status", "?"),
                (r.get("release") or "-")[:12],
                "-" if up is None else f"{up / 1e6:.1f} MB",
                "-" if rtf is None else f"{rtf:.3f}",
                f"{r.get('seconds', 0):.1f} s",
                (r.get("error") or "")[:90],
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def with_board(board: Board, fn: Any) -> dict[str, Any]:
    """Connect, run ``fn(session)`` and return its dict; failures become ``{"error", "exit"}``."""
    try:
        with BoardConnection(board) as conn:
            s = BoardSession(conn)
            s.ensure_agent()
            return fn(s)
    except AcidsError as e:
        return {"error": e.message, "exit": int(e.code)}


__all__ = [
    "BoardSession",
    "BundleRef",
    "PushOptions",
    "Unreachable",
    "exit_code",
    "plan_lines",
    "push_board",
    "push_many",
    "summary_table",
    "with_board",
]
