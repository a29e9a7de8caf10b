"""``acids-preprocess`` / ``acids-data``: parsing and I/O only; the work is in preprocess/store/inspect."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from acids_core.cli import AcidsCommand, AcidsGroup, verbosity_options
from acids_core.errors import DataError, Exit, MissingInput, UsageError
from acids_core.log import get_logger
from acids_core.records import read_records, stdin_is_piped, write_record
from acids_data import __version__

log = get_logger("data.cli")

PREPROCESS_EPILOG = """\b
Examples:
  acids-preprocess ~/audio -o data/
  acids-preprocess 'takes/**/*.flac' extra.wav -o data/ --sample-rate 48000 --channels 2
  acids-preprocess audio/ -o data/ --features loudness,f0,mel --jobs 2
  acids-preprocess audio/ -o data/ | acids-rave train -o runs/x
  find audio -name '*.wav' | jq -Rc '{kind:"audio",version:1,path:.}' | acids-preprocess -o data/
  acids-preprocess audio/ -o part-3/ --shard 3/8     # one task of a cluster array job; then acids-data merge

\b
stdout: one `dataset` record (JSON). stderr: progress, and one line per skipped file.
Exit: 0 all files done; 65 done, but some files were skipped (listed in the manifest and by
`acids-data inspect`); 66 an input does not exist; 2 bad options. Re-running the same command resumes
(files already done are skipped by content hash), also after a crash or kill -9.
"""


def _parse_features(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    return names


@click.command(
    "preprocess", cls=AcidsCommand, epilog=PREPROCESS_EPILOG, context_settings={"max_content_width": 110}
)
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset directory (created, or resumed when it exists).",
)
@click.option("--sample-rate", type=int, default=44100, show_default=True, help="Output sample rate (Hz).")
@click.option(
    "--channels",
    type=int,
    default=1,
    show_default=True,
    help="Output channels; 1 mixes all input channels down (mean).",
)
@click.option("--chunk", type=int, default=131072, show_default=True, help="Chunk length in samples.")
@click.option(
    "--hop", type=int, default=None, help="Samples between chunk starts [default: --chunk, no overlap]."
)
@click.option(
    "--features",
    "features_text",
    default="loudness,f0",
    show_default=True,
    help="Comma list of loudness, f0, mel; or 'none'.",
)
@click.option(
    "--feature-hop",
    type=int,
    default=None,
    help="Samples per feature frame [default: the power of two nearest 10 ms, e.g. 512 at 44.1 kHz].",
)
@click.option("--n-mels", type=int, default=64, show_default=True, help="Mel bands (with --features mel).")
@click.option(
    "--pad",
    type=click.Choice(["zero", "skip"]),
    default="zero",
    show_default=True,
    help="Audio shorter than a chunk: zero-pad it (said on stderr) or skip it (said too).",
)
@click.option(
    "--trim-db",
    type=float,
    default=None,
    help="Trim leading/trailing audio below this level (dBFS) and drop chunks entirely below it.",
)
@click.option("-j", "--jobs", type=int, default=None, help="Worker processes [default: the number of CPUs].")
@click.option(
    "--shard",
    "shard_text",
    default=None,
    metavar="i/N",
    help="Process only part i of N of the inputs (deterministic, for cluster array jobs).",
)
@click.option("--strict", is_flag=True, help="Stop at the first bad file (exit 65) instead of skipping it.")
@click.option("--shard-mb", type=int, default=64, show_default=True, help="Target size of one shard (MiB).")
@verbosity_options
def preprocess_cmd(
    inputs,
    out,
    sample_rate,
    channels,
    chunk,
    hop,
    features_text,
    feature_hop,
    n_mels,
    pad,
    trim_db,
    jobs,
    shard_text,
    strict,
    shard_mb,
):
    """Turn audio files into a dataset of fixed-length chunks and aligned features.

    INPUT: audio files, folders (searched recursively), glob patterns, or '-' to read `audio` records
    from stdin (also the default when no INPUT is given and stdin is a pipe). WAV, FLAC, OGG/Vorbis,
    MP3 and AIFF at any sample rate and channel count, decoded in-process and resampled with soxr (HQ).
    """
    from acids_data.preprocess import PreprocessConfig, run
    from acids_data.scan import discover, parse_shard, select_shard
    from acids_data.store import dataset_record

    cfg = PreprocessConfig(
        sample_rate=sample_rate,
        channels=channels,
        chunk=chunk,
        hop=hop,
        features=_parse_features(features_text),
        feature_hop=feature_hop,
        n_mels=n_mels,
        pad=pad,
        trim_db=trim_db,
    )
    cfg.check()
    shard = parse_shard(shard_text)
    names = list(inputs)
    if "-" in names or (not names and stdin_is_piped()):
        names = [n for n in names if n != "-"]
        for rec in read_records(None, kind="audio"):
            if "path" not in rec:
                raise DataError("an audio record on stdin has no 'path'")
            names.append(rec["path"])
    if not names:
        raise UsageError("no INPUT given (files, folders, globs, or audio records on stdin); see --help")
    sources = discover(names)
    if not sources:
        raise MissingInput(
            f"no audio files found in {', '.join(inputs) or 'the stdin records'} "
            "(looked for .wav .flac .ogg .mp3 .aif/.aiff)"
        )
    total = len(sources)
    sources = select_shard(sources, *shard)
    if shard[1] > 1:
        log.info(f"shard {shard[0]}/{shard[1]}: {len(sources)} of {total} files")
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    summary = run(
        sources,
        out,
        cfg,
        jobs=min(jobs, max(1, len(sources))),
        part=shard[0],
        shard=shard,
        strict=strict,
        shard_bytes=shard_mb << 20,
    )
    m = summary.manifest
    totals = m.get("totals", {})
    if not totals.get("chunks"):
        raise DataError(
            f"no chunks were made: all {summary.files_skipped} input file(s) were skipped (see above)"
        )
    write_record(dataset_record(out, m))
    minutes = (totals.get("seconds") or 0) / 60
    files_ok = totals.get("files_ok")
    log.info(
        f"{totals.get('chunks')} chunks ({minutes:.1f} min of audio) from {files_ok} files in {out}"
        + (f"; {summary.files_already_done} already done" if summary.files_already_done else "")
        + (
            f"; {totals.get('files_skipped')} skipped (acids-data inspect {out})"
            if totals.get("files_skipped")
            else ""
        )
    )
    if totals.get("files_skipped"):
        click.get_current_context().exit(int(Exit.DATA))


@click.group(cls=AcidsGroup, context_settings={"max_content_width": 110})
@click.version_option(__version__, prog_name="acids-data")
@verbosity_options
def main_group():
    """acids-data: audio datasets for the acids toolchain.

    \b
      acids-data preprocess audio/ -o data/     (same as acids-preprocess)
      acids-data inspect data/ --plot data.png
      acids-data merge part-*/ -o data/
    """


main_group.add_command(preprocess_cmd)


@main_group.command("inspect", cls=AcidsCommand)
@click.argument("dataset", required=False)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG: loudness and f0 histograms, a spectrogram of a random chunk.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object instead of text.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which random chunk to plot.")
@verbosity_options
def inspect_cmd(dataset, plot_path, as_json, seed):
    """Summarise a dataset: counts, durations, skipped files with reasons, feature statistics.

    DATASET: a dataset directory, its manifest.json, or a `dataset` record on stdin.

    \b
    Examples:
      acids-data inspect data/
      acids-data inspect data/ --plot data.png
      acids-preprocess audio/ -o data/ | acids-data inspect
    """
    import json

    from acids_data.inspect import format_summary, plot, summarise
    from acids_data.store import dataset_root

    root = _resolve_dataset(dataset, dataset_root)
    summary = summarise(root)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(format_summary(summary))
    if plot_path is not None:
        plot(root, plot_path, seed=seed)
        log.info(f"plot written to {plot_path}")


@main_group.command("merge", cls=AcidsCommand)
@click.argument("parts", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Merged dataset directory (must not hold another dataset).",
)
@click.option("--force", is_flag=True, help="Also merge parts whose run did not finish.")
@click.option("--copy", is_flag=True, help="Copy shard files instead of hard-linking them.")
@verbosity_options
def merge_cmd(parts, out, force, copy):
    """Join datasets made by `--shard i/N` runs into one dataset equal to a single-machine run.

    \b
    Example (a Slurm array of 8 tasks, then one merge):
      acids-preprocess /data/audio -o parts/$SLURM_ARRAY_TASK_ID --shard $SLURM_ARRAY_TASK_ID/8
      acids-data merge parts/* -o dataset/
    """
    from acids_data.merge import merge
    from acids_data.store import dataset_record

    paths = [Path(p) for p in parts]
    for p in paths:
        if not p.exists():
            raise MissingInput(f"{p}: no such dataset")
    manifest = merge(paths, out, link=not copy, force=force)
    write_record(dataset_record(out, manifest))
    totals = manifest.get("totals", {})
    log.info(f"merged {len(paths)} parts: {totals.get('chunks')} chunks in {out}")


def _resolve_dataset(arg, dataset_root):
    if arg is None or arg == "-":
        if not stdin_is_piped():
            raise UsageError("give a DATASET directory, or pipe a `dataset` record on stdin")
        recs = list(read_records(None, kind="dataset"))
        if not recs:
            raise DataError("no `dataset` record on stdin")
        return dataset_root(recs[-1])
    return dataset_root(arg)


def _one_blas_thread() -> None:
    """We parallelise over files with processes: a multi-threaded BLAS per process only burns CPU
    (measured: loudness took 3.7 CPU-s in 2.1 s wall with threads, 1.9 CPU-s with one). Must run before
    numpy is imported; an explicit user setting wins."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def main() -> None:
    """Console script ``acids-data``."""
    _one_blas_thread()
    main_group(prog_name="acids-data")


def preprocess_main() -> None:
    """Console script ``acids-preprocess``."""
    _one_blas_thread()
    preprocess_cmd(prog_name="acids-preprocess")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
