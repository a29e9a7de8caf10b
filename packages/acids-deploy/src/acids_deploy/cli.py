"""``acids-deploy``: parsing and I/O only; the work is in bundle.py, push.py and ssh.py."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from acids_core.cli import AcidsGroup, verbosity_options
from acids_core.errors import AcidsError, DataError, MissingInput, UsageError
from acids_core.log import get_logger
from acids_core.records import last_record, make_record, read_records, stdin_is_piped, write_record
from acids_deploy import __version__
from acids_deploy.inventory import ENV_INVENTORY, Board, load_inventory
from acids_deploy.profiles import PROFILES, get_profile

log = get_logger("deploy.cli")

CTX = {"max_content_width": 110}

inventory_option = click.option(
    "-i",
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=ENV_INVENTORY,
    default="boards.toml",
    show_default=True,
    help=f"Inventory TOML of boards (env {ENV_INVENTORY}).",
)
target_option = click.option(
    "-t",
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="Board name, group name or 'all' (repeatable, or comma-separated).",
)


@click.group(cls=AcidsGroup, context_settings=CTX)
@click.version_option(__version__, prog_name="acids-deploy")
@verbosity_options
def main_group() -> None:
    """acids-deploy: bundle exported models for Pi and Jetson boards and push them over SSH.

    \b
      acids-export ... --profile rpi-bookworm | acids-deploy bundle --profile rpi-bookworm -o b.tar \\
        | acids-deploy push --target studio
      acids-deploy boards                  # the inventory, and which boards answer
      acids-deploy status -t all           # the current release of every board
      acids-deploy rollback -t kitchen-pi  # back to the previous release
    """


# -- boards -------------------------------------------------------------------------------------------


def _check_board(board: Board) -> dict[str, Any]:
    from acids_deploy.ssh import BoardConnection  # paramiko: only when a command needs it

    t0 = time.monotonic()
    try:
        with BoardConnection(board) as conn:
            _, out, _ = conn.run(["uname", "-m"], timeout=board.connect_timeout)
        return {"reachable": True, "machine": out.strip(), "seconds": round(time.monotonic() - t0, 3)}
    except AcidsError as e:
        return {"reachable": False, "error": e.message, "exit": int(e.code)}


@main_group.command("boards", context_settings=CTX)
@inventory_option
@click.option("--no-check", is_flag=True, help="List only; don't connect.")
@click.option("--profiles", "show_profiles", is_flag=True, help="List the known profiles instead.")
def boards_cmd(inventory: Path, no_check: bool, show_profiles: bool) -> None:
    """List the boards of the inventory and check that each answers (pinned host key, our key).

    stdout: one `board` record per board. stderr: a table. Exit 0 when every board answered, else the
    code of the first failure (69 refused: host key or authentication; 75 unreachable).
    """
    if show_profiles:
        for p in PROFILES.values():
            write_record(
                make_record(
                    "profile",
                    name=p.name,
                    python=p.python,
                    platform=f"linux_{p.arch}",
                    glibc=".".join(map(str, p.glibc)),
                    requirements=list(p.requirements),
                    tensorrt=p.tensorrt.expected if p.tensorrt else None,
                    description=p.description,
                )
            )
        return
    from concurrent.futures import ThreadPoolExecutor

    inv = load_inventory(inventory)
    boards = list(inv.boards.values())
    if no_check:
        checks: list[dict[str, Any]] = [{} for _ in boards]
    else:
        with ThreadPoolExecutor(max_workers=8) as pool:
            checks = list(pool.map(_check_board, boards))
    rows = [("board", "address", "profile", "groups", "state")]
    worst = 0
    for b, c in zip(boards, checks, strict=True):
        rec = make_record(
            "board",
            name=b.name,
            host=b.host,
            port=b.port,
            user=b.user,
            profile=b.profile,
            groups=list(b.groups),
            install_dir=b.install_dir,
            **c,
        )
        write_record(rec)
        state = "-" if not c else ("ok " + c.get("machine", "") if c["reachable"] else c["error"])
        rows.append((b.name, b.address, b.profile, ",".join(b.groups), state))
        worst = worst or c.get("exit", 0)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + "  " + r[4], err=True)
    if worst:
        sys.exit(worst)


# -- bundle -------------------------------------------------------------------------------------------

BUNDLE_EPILOG = """\b
Examples:
  acids-deploy bundle decoder.onnx --profile rpi-bookworm -o decoder-pi.tar
  acids-export ... | acids-deploy bundle --profile jetson-jp4 -o nano.tar
  acids-deploy bundle m.onnx --profile jetson-jp4 --wheelhouse wheels/jp4 --offline -o m.tar
  acids-deploy bundle m.onnx --profile desktop --no-deps -o m.tar      # the board has numpy+onnxruntime

\b
Dependencies: `pip download` of the board's wheels (its Python, its manylinux tag ladder) into
--wheelhouse (default ~/.cache/acids-deploy/wheels/PROFILE), then `pip install --target site/` for the
board's platform. --offline uses only the wheelhouse. stdout: one `bundle` record.
"""


@main_group.command("bundle", context_settings=CTX, epilog=BUNDLE_EPILOG)
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("-p", "--profile", "profile_name", required=True, type=click.Choice(list(PROFILES)))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), help="The board's wheels.")
@click.option("--offline", "--no-deps-download", "offline", is_flag=True, help="Don't run pip download.")
@click.option("--no-deps", is_flag=True, help="Ship no dependencies (the board provides them).")
@click.option(
    "--require", "requires", multiple=True, metavar="REQ", help="Runner dependency (replaces the profile's)."
)
def bundle_cmd(
    files: tuple[Path, ...],
    profile_name: str,
    out: Path,
    wheelhouse: Path | None,
    offline: bool,
    no_deps: bool,
    requires: tuple[str, ...],
) -> None:
    """Pack model artifacts (FILES, or `artifact` records on stdin) into a bundle for one profile."""
    from acids_deploy.bundle import artifact_from_file, artifact_from_record, build_bundle

    profile = get_profile(profile_name)
    artifacts = []
    for f in files:
        if not f.exists():
            raise MissingInput(f"{f}: no such file")
        if f.suffix in (".jsonl", ".json"):
            artifacts += [artifact_from_record(r, profile) for r in read_records(f, kind="artifact")]
        else:
            artifacts.append(artifact_from_file(f, profile))
    if not files:
        if not stdin_is_piped():
            raise UsageError("give model FILES or pipe `artifact` records on stdin")
        artifacts = [artifact_from_record(r, profile) for r in read_records(None, kind="artifact")]
    if offline and wheelhouse is None and not no_deps:
        raise UsageError("--offline needs --wheelhouse DIR (or --no-deps)")
    rec = build_bundle(
        artifacts,
        profile,
        out,
        requirements=list(requires) if requires else None,
        wheelhouse=wheelhouse,
        download=not offline,
        deps=not no_deps,
    )
    write_record(rec)


# -- push -----------------------------------------------------------------------------------------------

PUSH_EPILOG = """\b
Examples:
  acids-deploy push b.tar -t kitchen-pi
  acids-deploy bundle m.onnx -p rpi-bookworm -o b.tar | acids-deploy push -t studio --parallel 4
  acids-deploy push b.tar -t all --dry-run

\b
stdout: one `deployment` record per board. stderr: progress and a per-board table.
Exit: 0 every board deployed (or already up to date); 65 a smoke test failed (rolled back) or the bundle
was refused; 69 a board refused us (host key, authentication); 75 a board stayed unreachable (retry).
"""


def _bundle_ref(bundle: Path | None) -> Any:
    from acids_deploy.bundle import check_bundle_tar, release_id_of, sha256_file
    from acids_deploy.push import BundleRef

    if bundle is None:
        if not stdin_is_piped():
            raise UsageError("give a BUNDLE tar or pipe a `bundle` record on stdin")
        rec = last_record(None, "bundle")
        if not rec.get("path"):
            raise DataError("bundle record without a 'path'")
        bundle = Path(rec["path"])
    manifest = check_bundle_tar(bundle)
    return BundleRef(
        path=bundle.resolve(),
        sha256=sha256_file(bundle),
        id=release_id_of(bundle),
        profile=manifest["profile"],
        size=bundle.stat().st_size,
    )


@main_group.command("push", context_settings=CTX, epilog=PUSH_EPILOG)
@click.argument("bundle", required=False, type=click.Path(dir_okay=False, path_type=Path))
@inventory_option
@target_option
@click.option("--dry-run", is_flag=True, help="Print the plan; connect to nothing, change nothing.")
@click.option(
    "--parallel", type=click.IntRange(1, 64), default=4, show_default=True, help="Boards at a time."
)
@click.option("--force", is_flag=True, help="Switch and smoke-test even when the release is already current.")
@click.option("--no-smoke", is_flag=True, help="Skip the smoke test (and so the automatic rollback).")
@click.option("--max-rtf", type=float, default=None, help="Fail the smoke test above this real-time factor.")
def push_cmd(
    bundle: Path | None,
    inventory: Path,
    targets: tuple[str, ...],
    dry_run: bool,
    parallel: int,
    force: bool,
    no_smoke: bool,
    max_rtf: float | None,
) -> None:
    """Push a BUNDLE (or the `bundle` record on stdin) to boards; verify, switch, smoke test, roll back."""
    from acids_deploy.push import PushOptions, exit_code, push_many, summary_table

    ref = _bundle_ref(bundle)
    boards = load_inventory(inventory).select(targets)
    opts = PushOptions(dry_run=dry_run, force=force, smoke=not no_smoke, max_rtf=max_rtf)
    if dry_run:
        log.info("dry run: nothing is changed")
    records = push_many(boards, ref, opts, parallel=parallel)
    for rec in records:
        if dry_run and rec.get("plan"):
            click.echo(f"{rec['board']}:", err=True)
            for i, step in enumerate(rec["plan"], 1):
                click.echo(f"  {i}. {step}", err=True)
        write_record(rec)
    if not dry_run:
        click.echo(summary_table(records), err=True)
    code = exit_code(records)
    if code:
        sys.exit(code)


# -- status / rollback / logs ----------------------------------------------------------------------------


def _for_boards(boards: list[Board], fn: Any, parallel: int = 8) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    from acids_deploy.push import with_board

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda b: with_board(b, fn), boards))


@main_group.command("status", context_settings=CTX)
@inventory_option
@target_option
def status_cmd(inventory: Path, targets: tuple[str, ...]) -> None:
    """The current release of each board, and whether its files still match the manifest."""
    boards = load_inventory(inventory).select(targets)
    results = _for_boards(boards, lambda s: s.call_ok("status"))
    worst = 0
    for b, r in zip(boards, results, strict=True):
        rec = make_record("board", name=b.name, host=b.host, port=b.port, profile=b.profile, **r)
        write_record(rec)
        if r.get("error"):
            state = r["error"]
        else:
            state = f"current {r.get('current') or '-'}, {len(r.get('releases', []))} release(s)"
            if r.get("current_problem"):
                state += f", DAMAGED: {r['current_problem']}"
        click.echo(f"{b.name}: {state}", err=True)
        worst = worst or r.get("exit", 0)
    if worst:
        sys.exit(worst)


@main_group.command("rollback", context_settings=CTX)
@inventory_option
@target_option
@click.option("--to", "to_release", default=None, help="Release id to switch to (default: the previous).")
@click.option("--no-smoke", is_flag=True, help="Skip the smoke test after switching.")
def rollback_cmd(inventory: Path, targets: tuple[str, ...], to_release: str | None, no_smoke: bool) -> None:
    """Switch boards back to their previous release (or --to ID); emits `deployment` records.

    Exit 65 when a board has nothing to roll back to (or no release --to ID), or the smoke test fails.
    """
    from acids_deploy.push import AGENT_EXIT_NO_RELEASE
    from acids_deploy.ssh import RemoteError

    boards = load_inventory(inventory).select(targets)

    def fn(s: Any) -> dict[str, Any]:
        status, res = s.call("rollback", *([to_release] if to_release else []))
        if status == AGENT_EXIT_NO_RELEASE:
            raise DataError(str(res.get("error")))
        if status != 0:
            raise RemoteError(f"{s.board.name}: agent rollback failed: {res.get('error', res)}")
        res["unit"] = s.restart_service().get("unit")
        if not no_smoke:
            res["smoke"] = s.smoke(None)
        return res

    results = _for_boards(boards, fn)
    worst = 0
    for b, r in zip(boards, results, strict=True):
        rec = make_record(
            "deployment", board=b.name, host=b.host, port=b.port, profile=b.profile, action="rollback"
        )
        if r.get("error"):
            rec.update(status="failed", error=r["error"], exit=r.get("exit", 1))
            click.echo(f"{b.name}: rollback failed: {r['error']}", err=True)  # one line per board
        else:
            ok = (r.get("smoke") or {"ok": True}).get("ok", False)
            rec.update(
                status="rolled-back",
                release=r["current"],
                previous=r["previous"],
                smoke=r.get("smoke"),
                unit=r.get("unit"),
            )
            rec["exit"] = 0 if ok else 65
            note = "" if ok else f" (smoke test FAILED: {r['smoke'].get('error')})"
            click.echo(f"{b.name}: {r['previous']} -> {r['current']}{note}", err=True)
        write_record(rec)
        worst = worst or rec["exit"]
    if worst:
        sys.exit(worst)


@main_group.command("logs", context_settings=CTX)
@inventory_option
@target_option
@click.option("-n", "--lines", type=click.IntRange(1, 10000), default=50, show_default=True)
def logs_cmd(inventory: Path, targets: tuple[str, ...], lines: int) -> None:
    """Print each board's deploy log (and its service's journal when the inventory names a service)."""
    boards = load_inventory(inventory).select(targets)

    def fn(s: Any) -> dict[str, Any]:
        res = s.call_ok("logs", str(lines))
        if s.board.service:
            argv = ["journalctl", "-u", s.board.service, "-n", str(lines), "--no-pager"]
            _, out, err = s.conn.run(argv)
            res["journal"] = (out or err).splitlines()
        return res

    worst = 0
    for b, r in zip(boards, _for_boards(boards, fn), strict=True):
        if r.get("error"):
            click.echo(f"{b.name}: error: {r['error']}", err=True)
            worst = worst or r.get("exit", 1)
            continue
        for line in r.get("lines", []):
            click.echo(f"{b.name}: {line}")
        for line in r.get("journal", []):
            click.echo(f"{b.name}: journal: {line}")
    if worst:
        sys.exit(worst)


def main() -> None:
    """Console script ``acids-deploy``."""
    main_group(prog_name="acids-deploy")
