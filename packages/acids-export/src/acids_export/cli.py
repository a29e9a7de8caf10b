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
    f = click.option(
        "--rtf-calls",
        type=click.IntRange(1, 10000),
        default=24,
        show_default=True,
        help="Buffers timed for the real-time factor (median), after the warm-up.",
    )(f)
    f = click.option(
        "--warmup",
        type=click.IntRange(1, 1000),
        default=5,
        show_default=True,
        help="Untimed calls before timing (TorchScript optimises its graph on the first calls).",
    )(f)
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
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "int8"]),
    default="fp32",
    show_default=True,
    help="Weight precision, where the family offers it (acids-rave: bf16; acids-ddsp: bf16, int8).",
)
@click.option(
    "--torch-export",
    "pt2",
    is_flag=True,
    help="Write a torch.export program (.pt2, one --method, state explicit) instead of TorchScript.",
)
@click.option(
    "--method", default=None, help="With --torch-export: the method (default: forward, else the first)."
)
@_check_options
def torchscript_cmd(
    ckpt, streaming, out, allow_new_ops, precision, pt2, method, audio, buffer, blocks, atol, warmup,
    rtf_calls,
) -> None:  # fmt: skip
    """A TorchScript file with the nn~ interface from CKPT (or piped `checkpoint` records).

    With --torch-export, the successor route: a .pt2 ExportedProgram of one method, ``(x, *state) -> (y,
    *state)`` when streaming, checked block by block against eager PyTorch.
    """
    from acids_export import registry, torchscript, verify

    if method and not pt2:
        raise UsageError("--method goes with --torch-export (TorchScript files hold every method)")
    if precision != "fp32" and pt2:
        raise UsageError("--precision bf16/int8 is for TorchScript files (nn~); --torch-export writes fp32")
    for path in _checkpoints(ckpt, out):
        loaded = registry.load(path, streaming=streaming, precision=precision)
        if pt2:
            from acids_export.torch_export import export_program

            tag = f".{method}" if method else ""
            final = out or Path(path).with_suffix(f"{'.streaming' if streaming else ''}{tag}.pt2")
            with _staged(Path(final)) as tmp:
                export_program(loaded, tmp, method=method, buffer=buffer or 4096)
                fields = verify.check(
                    tmp, audio=audio, checkpoint=loaded.checkpoint, buffer=buffer, blocks=blocks, atol=atol,
                    warmup=warmup, rtf_calls=rtf_calls,
                )  # fmt: skip
            _emit(fields, Path(final), {})
            log.info("wrote %s", final)
            continue
        tag = "" if precision == "fp32" else f".{precision}"
        final = out or Path(path).with_suffix(f"{'.streaming' if streaming else ''}{tag}.ts")
        with _staged(Path(final)) as tmp:
            torchscript.export(loaded, tmp, allow_hazards=allow_new_ops)
            fields = verify.check(
                tmp, audio=audio, checkpoint=loaded.checkpoint, buffer=buffer, blocks=blocks, atol=atol,
                warmup=warmup, rtf_calls=rtf_calls,
            )  # fmt: skip
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
def onnx_cmd(
    ckpt, profile, streaming, method, out, allow_ops, audio, buffer, blocks, atol, warmup, rtf_calls
) -> None:
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
                warmup=warmup,
                rtf_calls=rtf_calls,
            )
        _emit(fields, Path(final), {})
        log.info("wrote %s", final)


TRT_PROFILES = ["jetson-jp4", "jetson-jp5", "jetson-jp6"]


@main_group.command("tensorrt", cls=AcidsCommand)
@click.argument("ckpt", required=False)
@click.option("--profile", type=click.Choice(TRT_PROFILES), required=True, help="Target Jetson (TensorRT).")
@click.option("--streaming/--offline", default=True, show_default=True, help="State as explicit I/O.")
@click.option("--method", default=None, help="Method to export (default: forward, else the first).")
@click.option(
    "--shapes",
    type=click.Choice(["static", "dynamic"]),
    default="static",
    show_default=True,
    help="static: batch 1 at one buffer; dynamic: an optimisation profile over --min/--max-buffer.",
)
@click.option(
    "--min-buffer", type=click.IntRange(1), default=None, help="Dynamic: smallest buffer (buffer/4)."
)
@click.option(
    "--max-buffer", type=click.IntRange(1), default=None, help="Dynamic: largest buffer (buffer*4)."
)
@click.option("--fp16/--fp32", default=True, show_default=True, help="Engine precision on the board.")
@click.option(
    "--calls",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Buffers of real audio saved as on-device references.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output .onnx (default: beside the checkpoint); .ref.npz and .trt.json go beside it.",
)
@click.option("--allow-op", "allow_ops", multiple=True, metavar="OP", help="Accept an operator (verified).")
@_check_options
def tensorrt_cmd(
    ckpt, profile, streaming, method, shapes, min_buffer, max_buffer, fp16, calls, out, allow_ops,
    audio, buffer, blocks, atol, warmup, rtf_calls,
) -> None:  # fmt: skip
    """TensorRT-ready ONNX for a Jetson PROFILE, reference I/O and the on-board engine-build recipe.

    \b
    Writes NAME.onnx (checked with onnxruntime against eager PyTorch), NAME.ref.npz (inputs/outputs per
    call, for comparing the engine on the board) and NAME.trt.json (the trtexec recipe, in acids-deploy's
    trt/recipe.json layout). Where `import tensorrt` works, the engine is also built and compared here.
    """
    import numpy as np

    from acids_export import onnx as aonnx
    from acids_export import profiles, registry, verify
    from acids_export import tensorrt as atrt

    prof = profiles.get(profile)
    precision = "fp16" if fp16 else "fp32"
    for path in _checkpoints(ckpt, out):
        loaded = registry.load(path, streaming=streaming)
        m = loaded.spec.method(method) if method else None
        tag = f".{m.name}" if m else ""
        final = Path(
            out or Path(path).with_suffix(f".{profile}.trt{'.streaming' if streaming else ''}{tag}.onnx")
        )
        ref_final, recipe_final = atrt.companions(final)
        with _staged(final) as tmp, _staged(ref_final) as ref_tmp, _staged(recipe_final) as recipe_tmp:
            meta = aonnx.export(
                loaded,
                prof,
                tmp,
                method=method,
                allow_ops=tuple(allow_ops),
                buffer=buffer,
                static=shapes == "static",
            )
            mm = loaded.spec.method(meta["method"])
            block = int(meta["buffer"])
            trt_shapes = None
            if shapes == "dynamic":
                if not meta["dynamic_time"]:
                    raise DataError(f"{mm.name} only exports at a fixed buffer: use --shapes static")
                step = max(mm.in_ratio, mm.out_ratio)
                lo = min_buffer or max(block // 4, step)
                hi = max_buffer or block * 4
                if lo % step or hi % step or not lo <= block <= hi:
                    raise UsageError(
                        f"--min-buffer {lo} <= --buffer {block} <= --max-buffer {hi} must hold, "
                        f"each a multiple of {step}"
                    )
                trt_shapes = atrt.optimisation_profile(meta, mm.in_channels, mm.in_ratio, lo, hi)
                atrt.probe_lengths(tmp, mm, [lo, hi])
            fields = verify.check(
                tmp, profile=profile, audio=audio, checkpoint=loaded.checkpoint, buffer=block,
                blocks=blocks, atol=atol, warmup=warmup, rtf_calls=rtf_calls,
            )  # fmt: skip
            samples, _ = verify.load_audio(
                audio or verify.find_audio(), calls * block, loaded.spec.sample_rate
            )
            offline = registry.load(path, streaming=False).module
            x = verify.method_inputs(loaded.spec, samples, offline)[0][mm.name]
            refs = atrt.reference_io(tmp, x.numpy(), calls)
            with open(ref_tmp, "wb") as f:
                np.savez(f, **refs)
            digest = verify.sha256(tmp)
            recipe = atrt.recipe(
                final,
                sha256=digest,
                profile=prof,
                precision=precision,
                shapes=trt_shapes,
                reference=ref_final,
            )
            atrt.write_recipe(recipe_tmp, recipe)
            engine = None
            if atrt.available():
                engine = atrt.build_and_compare(tmp, ref_tmp, precision)
                tol = atrt.TOLERANCES[precision]["atol"]
                if engine["max_abs_error"] > tol:
                    raise DataError(f"the TensorRT engine differs by {engine['max_abs_error']:.3g} > {tol:g}")
            else:
                log.info("tensorrt is not importable here: the engine is built on the board (%s)", final)
        io_spec = dict(fields["io"])
        io_spec["trt_shapes"] = trt_shapes
        extra = {
            "format": "tensorrt-onnx",
            "io": io_spec,
            "tensorrt": prof.tensorrt,
            "precision": precision,
            "shapes": shapes,
            "reference": str(ref_final.resolve()),
            "recipe": str(recipe_final.resolve()),
            "trtexec": recipe["command_line"],
            "engine": engine,
        }
        _emit(fields, final, extra)
        log.info("wrote %s, %s, %s", final, ref_final.name, recipe_final.name)


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
def check_cmd(file, profile, checkpoint, audio, buffer, blocks, atol, warmup, rtf_calls) -> None:
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
            path, profile=prof, audio=audio, checkpoint=checkpoint, buffer=buffer, blocks=blocks, atol=atol,
            warmup=warmup, rtf_calls=rtf_calls,
        )  # fmt: skip
        write_record(make_record("artifact", **fields))


def main() -> None:
    """Console script ``acids-export``."""
    main_group(prog_name="acids-export")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
