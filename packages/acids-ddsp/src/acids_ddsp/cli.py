"""``acids-ddsp``: train, transfer, stream, info. Parsing and I/O only; torch is imported in the commands."""

from __future__ import annotations

from pathlib import Path

import click

from acids_core.cli import AcidsGroup, verbosity_options
from acids_core.config import config_options
from acids_core.errors import DataError, MissingInput
from acids_core.log import get_logger
from acids_core.records import last_record, make_record, stdin_is_piped, write_record

log = get_logger("acids_ddsp")


def _config(config: str | None, overrides: tuple[str, ...]):
    from acids_core.config import ConfigError, load
    from acids_ddsp.config import PRESETS, DDSPConfig

    try:
        return load(DDSPConfig, config, overrides, presets=PRESETS)
    except ValueError as e:  # DDSPConfig's own checks (ConfigError, a usage error, passes through)
        raise ConfigError(f"invalid config: {e}") from None


@click.group(cls=AcidsGroup)
@verbosity_options
def main() -> None:
    """DDSP instrument models: harmonic + noise + reverb synthesis driven by f0 and loudness."""


@main.command()
@click.argument("data", required=False)
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory."
)
@config_options
@click.option("--data", "data_option", default=None, help="Dataset directory or manifest (same as DATA).")
@click.option(
    "--steps",
    "--max-steps",
    "steps",
    type=int,
    default=None,
    help="Training steps (default: the config's train.steps).",
)
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/last.ckpt.")
@click.option("--no-reverb", is_flag=True, help="Same as --set synth.reverb=false.")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
def train(
    data: str | None,
    data_option: str | None,
    out_dir: str,
    config: str | None,
    overrides: tuple[str, ...],
    steps: int | None,
    checkpoint_every: int,
    resume: bool,
    no_reverb: bool,
    tensorboard: bool,
    threads: int | None,
) -> None:
    """Train on an acids-preprocess dataset (DATA or a piped `dataset` record); emit a `checkpoint` record."""
    import torch

    from acids_ddsp.train import train as run

    if threads:
        torch.set_num_threads(threads)
    if data_option is not None:
        if data is not None:
            raise click.UsageError("give the dataset once: DATA or --data")
        data = data_option

    if data is None or data == "-":
        if not stdin_is_piped() and data is None:
            raise click.UsageError("give a dataset directory, or pipe a `dataset` record")
        source = last_record(None, "dataset")
    else:
        source = data
    cfg = _config(config, (*overrides, *(("synth.reverb=false",) if no_reverb else ())))
    path = run(
        cfg,
        source,
        out_dir,
        resume=resume,
        checkpoint_every=checkpoint_every,
        tensorboard=tensorboard,
        steps=steps,
    )
    import os

    if os.environ.get("RANK", "0") == "0":  # under torchrun, one record (rank 0's)
        write_record(make_record("checkpoint", path=str(Path(path).resolve()), format="acids-ddsp"))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--pitch-shift", type=float, default=0.0, help="Semitones, after the automatic octave shift.")
@click.option("--loudness-shift", type=float, default=0.0, help="dB, after loudness matching.")
@click.option("--no-auto", is_flag=True, help="No octave shift, loudness matching or unvoiced attenuation.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG comparing input and output f0/loudness (default: DEST with .png; --no-plot: none).",
)
@click.option("--no-plot", is_flag=True, help="Write no PNG.")
@click.option(
    "--mean-z",
    is_flag=True,
    help="Autoencoder models: decode with the training set's mean z instead of the input's.",
)
def transfer(
    model: str,
    source: str,
    dest: str,
    pitch_shift: float,
    loudness_shift: float,
    no_auto: bool,
    plot: str | None,
    no_plot: bool,
    mean_z: bool,
) -> None:
    """Resynthesise a monophonic recording SOURCE with the instrument MODEL into DEST (WAV).

    An autoencoder model (encoder.kind = mfcc) takes its latent z from SOURCE's audio, or with --mean-z
    the training set's mean z.
    """
    import numpy as np
    import soundfile as sf
    import torch

    from acids_data.audio import load as load_audio
    from acids_data.features import compute_features
    from acids_ddsp import checkpoint
    from acids_ddsp.transfer import adjust

    if not Path(source).exists():
        raise MissingInput(f"{source}: no such file")
    env = checkpoint.read(model)
    cfg = checkpoint.config_of(env)
    net = checkpoint.load(model)
    x = load_audio(source, cfg.sample_rate, 1)  # (1, T)
    feats = compute_features(x, cfg.sample_rate, cfg.hop, ["loudness", "f0"])
    if feats["f0"].size == 0:
        raise DataError(f"{source}: shorter than one frame ({cfg.hop} samples)")
    f0, loudness, done = adjust(
        feats["f0"],
        feats["f0_confidence"],
        feats["loudness"],
        env["payload"].get("stats"),
        auto=not no_auto,
        pitch_shift=pitch_shift,
        loudness_shift=loudness_shift,
    )
    log.info("adjustments: %s", done)
    if mean_z and not net.has_encoder:
        raise click.BadParameter("the model has no encoder (no z)", param_hint="--mean-z")
    source_audio = None
    if net.has_encoder and not mean_z:
        source_audio = torch.from_numpy(np.ascontiguousarray(x[:, : len(f0) * cfg.hop], dtype=np.float32))
    with torch.inference_mode():
        audio = net(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None], source_audio)[0, 0].numpy()
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        log.warning("output peaks at %.2f: scaled to 0.99 (use --loudness-shift to lower it)", peak)
        audio = audio * (0.99 / peak)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    sf.write(dest, audio, cfg.sample_rate, subtype="FLOAT")
    extra = {}
    if not no_plot:
        from acids_ddsp import plots

        if plots.available():
            png = Path(plot) if plot else Path(dest).with_suffix(".png")
            out_feats = compute_features(audio[None], cfg.sample_rate, cfg.hop, ["loudness", "f0"])
            plots.transfer_png(
                png,
                cfg.frame_rate,
                feats,
                (f0, loudness),
                out_feats,
                title=f"{Path(source).name} through {Path(model).name} ({done})",
            )
            extra["plot"] = str(png.resolve())
        else:
            log.warning("matplotlib is not installed (pip install acids-ddsp[train]): no PNG")
    write_record(
        make_record(
            "audio",
            path=str(Path(dest).resolve()),
            sample_rate=cfg.sample_rate,
            channels=1,
            frames=int(audio.shape[-1]),
            source=str(Path(source).resolve()),
            adjustments=done,
            **({"z": "mean" if mean_z else "source"} if net.has_encoder else {}),
            **extra,
        )
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--controls",
    is_flag=True,
    help="Read interleaved float32 (f0 Hz, loudness dB) frames instead of audio (no look-ahead).",
)
@click.option("--block", type=int, default=1024, show_default=True, help="Samples per block (hop multiple).")
@click.option("--wav", "wav_out", is_flag=True, help="Write a float32 WAV stream instead of raw float32.")
@click.option("--pitch-shift", type=float, default=0.0, help="Semitones (audio input).")
@click.option("--loudness-shift", type=float, default=0.0, help="dB (audio input).")
@click.option(
    "--unvoiced-db", type=float, default=0.0, show_default=True, help="Attenuation of unvoiced frames (dB)."
)
@click.option(
    "--rate",
    "input_rate",
    type=click.IntRange(min=1),
    default=None,
    help="Sample rate of raw float32 input (default: the model's; a WAV stream's header gives its own). "
    "Another rate than the model's is resampled on the fly; the output stays at the model's rate.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "int8"]),
    default="fp32",
    show_default=True,
    help="Decoder weights: bf16 halves the bytes read per block (CPUs with bfloat16 arithmetic), "
    "int8 quarters them (int8 products; about 38-42 dB SNR against fp32).",
)
def stream(
    model: str,
    controls: bool,
    block: int,
    wav_out: bool,
    pitch_shift: float,
    loudness_shift: float,
    unvoiced_db: float,
    input_rate: int | None,
    threads: int,
    precision: str,
) -> None:
    """Resynthesise stdin to stdout block by block with the instrument MODEL.

    Audio in: raw little-endian float32 mono (at the model's rate, or --rate), or a WAV stream at any rate
    (detected by its header); another rate than the model's is resampled on the fly (soxr HQ).
    The features are acids-data's, equal to the offline ones, so the output is the offline resynthesis
    delayed by a look-ahead (logged; 192 ms + up to a hop at 16 kHz) and the block; an autoencoder model
    encodes z from the same audio. With --controls: f0/loudness frames in, audio out, no look-ahead (an
    autoencoder model uses the training set's mean z). Out: raw float32 (or --wav) at the model's rate.
    """
    import sys

    import torch

    from acids_ddsp import checkpoint
    from acids_ddsp.stream import FeatureStream, PcmReader, stream_audio, stream_controls, wav_stream_header

    if not Path(model).exists():
        raise MissingInput(f"{model}: no such checkpoint")
    torch.set_num_threads(threads)
    net = checkpoint.load(model)
    net.set_precision(precision)
    if block < net.hop or block % net.hop:
        raise click.BadParameter(f"must be a positive multiple of the hop ({net.hop})", param_hint="--block")
    out = sys.stdout.buffer
    if wav_out:
        out.write(wav_stream_header(net.sample_rate))
    if controls:
        blocks = stream_controls(net, sys.stdin.buffer, block // net.hop)
    else:
        reader = PcmReader(sys.stdin.buffer, net.sample_rate, input_rate)
        if reader.input_rate != net.sample_rate:
            log.info("resampling the input: %d Hz -> the model's %d Hz", reader.input_rate, net.sample_rate)
        look = FeatureStream(net.sample_rate, net.hop).lookahead
        ms = 1000 * look / net.sample_rate
        log.info("feature look-ahead %d samples (%.1f ms) + block %d", look, ms, block)
        blocks = stream_audio(
            net,
            reader,
            block,
            pitch_shift=pitch_shift,
            loudness_shift=loudness_shift,
            unvoiced_db=unvoiced_db,
        )
    try:
        for audio in blocks:
            if audio.size:
                out.write(audio.astype("<f4").tobytes())
                out.flush()
    except BrokenPipeError:  # the reader went away: stop quietly (exit 1, as click does on EPIPE)
        sys.stderr.close()
        raise SystemExit(1) from None


@main.command()
@config_options
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="A checkpoint.")
def info(config: str | None, overrides: tuple[str, ...], model_path: str | None) -> None:
    """Emit a `model` record: resolved config and parameter counts (of a preset or a checkpoint)."""
    from acids_core.config import to_dict
    from acids_ddsp import checkpoint
    from acids_ddsp.model import DDSP, count_parameters

    net = checkpoint.load(model_path) if model_path else DDSP(_config(config, overrides))
    write_record(
        make_record(
            "model",
            family="ddsp",
            parameters=count_parameters(net),
            decoder_parameters=count_parameters(net.decoder),
            encoder_parameters=count_parameters(net.encoder),
            config=to_dict(net.cfg),
        )
    )


if __name__ == "__main__":  # torchrun -m acids_ddsp.cli train ...
    main()
