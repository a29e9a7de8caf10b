"""``acids-export``: TorchScript for nn~, ONNX per board profile, and ``check`` of any artifact.

Parsing and I/O only; torch is imported inside the commands so ``--help`` stays fast. Every artifact is
written to a temporary sibling, checked (:mod:`acids_export.verify`), then renamed into place and reported
as one ``artifact`` record on stdout; a failed check leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from acids_core.cli import AcidsCommand, AcidsGroup, verbosity_options
from acids_core.errors import DataError, UsageError
from acids_core.log import get_logger
from acids_core.records import make_record, read_records, stdin_is_piped, write_record
from acids_export import __version__

log = get_logger("acids_export")
PROFILE_NAMES = ["desktop", "rpi-bookworm", "jetson-jp4", "jetson-jp5", "jetson-jp6"]


@click.group(cls=AcidsGroup, context_settings={"max_content_width": 110})
@click.version_option(__version__, prog_name="acids-export")
@verbosity_options
def main_group() -> None:
    """acids-export: verified TorchScript (nn~) and ONNX (board profiles) from acids checkpoints.

    \b
      acids-export list
      acids-export torchscript runs/x/last.ckpt --streaming -o rave.ts
      acids-rave train ... | acids-export onnx --profile rpi-bookworm | acids-export check -
    """


def _checkpoints(ckpt: str | None, out: Path | None) -> Iterator[str]:
    """The checkpoint argument, or the paths of `checkpoint` records on stdin (one only with -o)."""
    if ckpt not in (None, "-"):
        yield str(ckpt)
        return
    if not stdin_is_piped():
        raise UsageError("give a checkpoint path, or pipe `checkpoint` records on stdin")
    n = 0
    for rec in read_records(None, "checkpoint"):
        if not isinstance(rec.get("path"), str):
            raise DataError("a checkpoint record without a 'path'")
        n += 1
        if n > 1 and out is not None:
            raise UsageError("-o names one file, but stdin has several `checkpoint` records")
        yield rec["path"]
    if n == 0:
        raise DataError("no `checkpoint` record on stdin")


def _check_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--atol", type=float, default=1e-3, show_default=True, help="Max abs error allowed.")(f)
    f = click.option(
        "--blocks",
        type=click.IntRange(2, 1000),
        default=8,
        show_default=True,
        help="Buffers of real audio to run.",
    )(f)
    f = click.option(
        "--buffer",
        type=click.IntRange(1),
        default=None,
        help="Buffer size in samples (default: the profile's; nn~: 4096).",
    )(f)
    f = click.option(
        "--audio",
        type=click.Path(dir_okay=False),
        default=None,
        help="Real audio to check on (default: $ACIDS_EXPORT_AUDIO or the repo's demo audio).",
    )(f)
    return f


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out``, renamed over it on success and removed on failure."""
    from acids_core.atomic import commit_file, temporary_path

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out)
    try:
        yield tmp
        commit_file(tmp, out)
    except DataError as e:  # name the file the user asked for, not the temporary one
        raise DataError(e.message.replace(str(tmp), str(out))) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _emit(fields: dict[str, Any], final: Path, extra: dict[str, Any]) -> None:
    fields = {**fields, "path": str(final.resolve()), **extra}
    write_record(make_record("artifact", **fields))


@main_group.command("list", cls=AcidsCommand)
@click.option("--profiles", is_flag=True, help="List the board profiles instead.")
def list_cmd(profiles: bool) -> None:
    """Installed exportables (entry point group acids.exportables), or the board profiles."""
    if profiles:
        from acids_export.profiles import PROFILES

        rows = [{"kind": "profile", **p.to_json()} for p in PROFILES.values()]
    else:
        from acids_export.registry import available

        rows = [{"kind": "exportable", **r} for r in available()]
    if sys.stdout.isatty():
        for r in rows:
            click.echo("  ".join(f"{k}={v}" for k, v in r.items() if k != "kind"))
        if not rows:
            click.echo("no exportables installed (install a model package, e.g. acids-rave)", err=True)
        return
    for r in rows:
        kind = r.pop("kind")
        write_record(make_record(kind, **r))


@main_group.command("torchscript", cls=AcidsCommand)
@click.argument("ckpt", required=False)
@click.option("--streaming/--offline", default=False, help="Keep convolution/GRU state between calls.")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output .ts (default: beside the checkpoint).",
)
@click.option("--allow-new-ops", is_flag=True, help="Write files that nn~'s libtorch 2.5 cannot load.")
@_check_options
def torchscript_cmd(ckpt, streaming, out, allow_new_ops, audio, buffer, blocks, atol) -> None:
    """A TorchScript file with the nn~ interface from CKPT (or piped `checkpoint` records)."""
    from acids_export import registry, torchscript, verify

    for path in _checkpoints(ckpt, out):
        loaded = registry.load(path, streaming=streaming)
        final = out or Path(path).with_suffix(".streaming.ts" if streaming else ".ts")
        with _staged(Path(final)) as tmp:
            torchscript.export(loaded, tmp, allow_hazards=allow_new_ops)
            fields = verify.check(
                tmp, audio=audio, checkpoint=loaded.checkpoint, buffer=buffer, blocks=blocks, atol=atol
            )
        _emit(fields, Path(final), {})
        log.info("wrote %s", final)


@main_group.command("onnx", cls=AcidsCommand)
@click.argument("ckpt", required=False)
@click.option("--profile", type=click.Choice(PROFILE_NAMES), required=True, help="Target board runtime.")
@click.option("--streaming/--offline", default=False, help="State as explicit inputs/outputs.")
@click.option("--method", default=None, help="Method to export (default: forward, else the first).")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output .onnx (default: beside the checkpoint).",
)
@click.option(
    "--allow-op",
    "allow_ops",
    multiple=True,
    metavar="OP",
    help="Accept an operator outside the profile's table (you verified it on the board).",
)
@_check_options
def onnx_cmd(ckpt, profile, streaming, method, out, allow_ops, audio, buffer, blocks, atol) -> None:
    """ONNX for a board PROFILE from CKPT (or piped `checkpoint` records)."""
    from acids_export import onnx as aonnx
    from acids_export import profiles, registry, verify

    prof = profiles.get(profile)
    for path in _checkpoints(ckpt, out):
        loaded = registry.load(path, streaming=streaming)
        m = loaded.spec.method(method) if method else None
        tag = f".{m.name}" if m else ""
        final = out or Path(path).with_suffix(f".{profile}{'.streaming' if streaming else ''}{tag}.onnx")
        with _staged(Path(final)) as tmp:
            aonnx.export(loaded, prof, tmp, method=method, allow_ops=tuple(allow_ops))
            fields = verify.check(
                tmp,
                profile=profile,
                audio=audio,
                checkpoint=loaded.checkpoint,
                buffer=buffer,
                blocks=blocks,
                atol=atol,
            )
        _emit(fields, Path(final), {})
        log.info("wrote %s", final)


@main_group.command("check", cls=AcidsCommand)
@click.argument("file", required=False)
@click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    default=None,
    help="Check an ONNX file against this profile (default: the one it was exported for).",
)
@click.option("--checkpoint", default=None, help="Eager reference (default: the one recorded in the file).")
@_check_options
def check_cmd(file, profile, checkpoint, audio, buffer, blocks, atol) -> None:
    """Reload FILE (.ts or .onnx, or piped `artifact` records) in its runtime, verify it, emit a record."""
    from acids_export import verify

    if file in (None, "-"):
        if not stdin_is_piped():
            raise UsageError("give an artifact path, or pipe `artifact` records on stdin")
        items = [(r.get("path"), r.get("profile")) for r in read_records(None, "artifact")]
        if not items:
            raise DataError("no `artifact` record on stdin")
    else:
        items = [(file, None)]
    for path, rec_profile in items:
        if not isinstance(path, str):
            raise DataError("an artifact record without a 'path'")
        prof = profile or (rec_profile if rec_profile in PROFILE_NAMES else None)
        fields = verify.check(
            path, profile=prof, audio=audio, checkpoint=checkpoint, buffer=buffer, blocks=blocks, atol=atol
        )
        write_record(make_record("artifact", **fields))


def main() -> None:
    """Console script ``acids-export``."""
    main_group(prog_name="acids-export")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
