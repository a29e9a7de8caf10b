"""``acids-flowsynth``: render, train, infer, synths. Parsing and I/O only; torch is imported lazily."""

from __future__ import annotations

from pathlib import Path

import click

from acids_core.cli import AcidsGroup, verbosity_options
from acids_core.config import config_options
from acids_core.errors import MissingInput
from acids_core.log import get_logger
from acids_core.records import last_record, make_record, stdin_is_piped, write_record

log = get_logger("acids_flowsynth")

RENDER_EPILOG = """\b
Examples:
  acids-flowsynth render --synth acids-sub --presets 11000 --subset 32 -o data/sub32
  acids-flowsynth render --presets 256 --subset filter_cutoff,osc_mix -o data/small
  acids-flowsynth render --synth amsynth --presets bank --subset 16 -o data/amsynth16
  acids-flowsynth render --presets 2000 -o data/x | acids-flowsynth train --config paper -o runs/x
"""


def _config(config: str | None, overrides: tuple[str, ...]):
    from acids_core.config import load
    from acids_flowsynth.config import PRESETS, FlowSynthConfig

    return load(FlowSynthConfig, config, overrides, presets=PRESETS)


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@click.group(cls=AcidsGroup)
@verbosity_options
def main() -> None:
    """FlowSynth: infer synthesizer parameters from audio with auto-encoders and normalizing flows."""


@main.command(epilog=RENDER_EPILOG)
@click.option("--synth", default="acids-sub", show_default=True, help="Synth backend (see `synths`).")
@click.option(
    "--presets",
    required=True,
    help="Number of random presets, or `bank`: the synth's human-made presets (amsynth).",
)
@click.option(
    "--banks",
    type=click.Path(exists=True),
    default=None,
    help="With --presets bank: a .bank file or a directory of them (default: the synth's own banks).",
)
@click.option(
    "--subset", default="16", show_default=True, help="Parameters sampled: 16, 32, all, or name,name,..."
)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset dir.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sample-rate", type=click.IntRange(min=8000), default=22050, show_default=True)
@click.option("--note", type=click.IntRange(0, 127), default=60, show_default=True)
@click.option("--velocity", type=click.IntRange(1, 127), default=100, show_default=True)
@click.option("--hold", type=float, default=3.0, show_default=True, help="Seconds before note-off.")
@click.option("--duration", type=float, default=4.0, show_default=True, help="Seconds rendered.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
def render(
    synth: str,
    presets: str,
    banks: str | None,
    subset: str,
    out_dir: str,
    seed: int,
    sample_rate: int,
    note: int,
    velocity: int,
    hold: float,
    duration: float,
    batch: int,
    threads: int | None,
) -> None:
    """Render random presets into an acids-data dataset (audio, 64-band log-mel, parameters, 80/10/10 split);
    emit a `dataset` record. Re-running the same command resumes."""
    from acids_data.store import dataset_record
    from acids_flowsynth.render import render_dataset, split_counts
    from acids_flowsynth.synth import get_backend, subset_indices

    if presets != "bank":
        try:
            n_presets: int | str = int(presets)
        except ValueError:
            raise click.BadParameter("a number or `bank`", param_hint="--presets") from None
        if n_presets < 1:
            raise click.BadParameter("must be >= 1", param_hint="--presets")
    else:
        n_presets = "bank"
    subset_indices(get_backend(synth), subset)  # usage errors before any work
    if not 0 < hold <= duration:
        raise click.BadParameter("need 0 < --hold <= --duration", param_hint="--hold")
    _threads(threads)
    out = Path(out_dir)
    m = render_dataset(
        synth,
        n_presets,
        out,
        subset=subset,
        banks=banks,
        seed=seed,
        sample_rate=sample_rate,
        note=note,
        velocity=velocity,
        hold=hold,
        duration=duration,
        batch=batch,
    )
    write_record(
        {
            **dataset_record(out, m),
            "synth": synth,
            "subset": m["features"]["params"]["subset"],
            "splits": split_counts(m),
        }
    )


@main.command()
@click.argument("data", required=False)
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory."
)
@config_options
@click.option(
    "--model",
    "kind",
    default=None,
    help="Same as --set model.kind=KIND (mlp, cnn, resnet, vae, flow_reg...).",
)
@click.option("--epochs", type=int, default=None, help="Epochs (default: the config's train.epochs).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/last.ckpt.")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True)
@click.option(
    "--audio-metrics/--no-audio-metrics", default=True, show_default=True, help="Re-render the test set."
)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
def train(
    data: str | None,
    out_dir: str,
    config: str | None,
    overrides: tuple[str, ...],
    kind: str | None,
    epochs: int | None,
    resume: bool,
    tensorboard: bool,
    audio_metrics: bool,
    threads: int | None,
) -> None:
    """Train on a synth dataset (DATA or a piped `dataset` record); emit a `checkpoint` record."""
    import json

    from acids_flowsynth.train import metrics_summary
    from acids_flowsynth.train import train as run

    if data is None or data == "-":
        if not stdin_is_piped() and data is None:
            raise click.UsageError("give a dataset directory, or pipe a `dataset` record")
        source = last_record(None, "dataset")
    else:
        source = data
    cfg = _config(config, (*overrides, *((f"model.kind={kind}",) if kind else ())))
    _threads(threads)
    path = run(
        cfg,
        source,
        out_dir,
        resume=resume,
        tensorboard=tensorboard,
        epochs=epochs,
        evaluate_audio=audio_metrics,
    )
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    write_record(
        make_record(
            "checkpoint",
            path=str(Path(path).resolve()),
            format="acids-flowsynth",
            model=cfg.model.kind,
            metrics=metrics_summary(metrics),
        )
    )


@main.command()
@click.option("--synth", default="acids-sub", show_default=True)
def synths(synth: str) -> None:
    """Emit a `synth` record: the backend's parameter table and subsets."""
    from acids_flowsynth.synth import get_backend

    b = get_backend(synth)
    write_record(
        make_record(
            "synth",
            name=b.name,
            params=[p.describe() for p in b.params],
            subsets={k: list(v) for k, v in b.subsets.items()},
            differentiable=b.differentiable,
            deterministic=b.deterministic,
        )
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Parameters JSON."
)
@click.option("--render", "render_path", type=click.Path(dir_okay=False), default=None, help="Re-render WAV.")
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Mel comparison PNG."
)
@click.option(
    "--preset",
    "preset_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Preset file (amsynth: a one-preset .bank).",
)
@click.option(
    "--shift/--no-shift",
    default=True,
    show_default=True,
    help="Track the note's pitch and shift it to the dataset's note (C4) before encoding.",
)
def infer(
    model: str,
    source: str,
    out_json: str | None,
    render_path: str | None,
    plot_path: str | None,
    preset_path: str | None,
    shift: bool,
) -> None:
    """Infer the parameters of SOURCE (a WAV, taken as a 4 s note, shifted to C4) with MODEL; write them
    as JSON."""
    from acids_flowsynth.infer import infer_file

    if not Path(source).exists():
        raise MissingInput(f"{source}: no such file")
    result = infer_file(
        model,
        source,
        out_json=out_json,
        render_path=render_path,
        plot_path=plot_path,
        preset_path=preset_path,
        shift=shift,
    )
    write_record(make_record("example", **result))


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output dir.")
@click.option("--data", default=None, type=click.Path(exists=True), help="The model's dataset: PCA axes.")
@click.option("--controls", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--steps", type=click.IntRange(min=2), default=7, show_default=True)
@click.option("--span", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True)
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds per step."
)
def macros(
    model: str, out_dir: str, data: str | None, controls: int, steps: int, span: float, duration: float | None
) -> None:
    """Latent axes (or their PCA with --data) as macro controls: a rendered sweep per control (WAV + PNG)."""
    from acids_flowsynth.macros import sweep_macros

    result = sweep_macros(
        model, out_dir, data=data, controls=controls, steps=steps, span=span, duration=duration
    )
    write_record(make_record("macros", path=str(Path(out_dir).resolve()), **result))


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--in-port", type=click.IntRange(0, 65535), default=1232, show_default=True)
@click.option("--out-port", type=click.IntRange(1, 65535), default=1233, show_default=True)
@click.option("--data", default=None, type=click.Path(exists=True), help="The model's dataset: PCA axes.")
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (default: on /stop).")
def serve(model: str, in_port: int, out_port: int, data: str | None, max_seconds: float | None) -> None:
    """An OSC server on 127.0.0.1 with the FlowSynth plugin's messages (/encode, /decode; /params, /z_pos)."""
    from acids_flowsynth.serve import FlowServer

    server = FlowServer(model, in_port=in_port, out_port=out_port, data=data)
    log.info("listening on 127.0.0.1:%d (send /stop to quit)", server.port)
    try:
        handled = server.serve(max_seconds=max_seconds)
    except KeyboardInterrupt:
        handled = server.handled
    log.info("handled %d messages", handled)
