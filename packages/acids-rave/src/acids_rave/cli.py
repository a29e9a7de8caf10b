"""``acids-rave``: train a RAVE model from a dataset (or a piped ``dataset`` record), inspect a model.

Parsing and I/O only; torch is imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from acids_core.cli import AcidsCommand, AcidsGroup, verbosity_options
from acids_core.config import config_options
from acids_core.errors import DataError, MissingInput, UsageError
from acids_core.log import Progress, get_logger
from acids_core.records import last_record, make_record, stdin_is_piped, write_record
from acids_rave import __version__
from acids_rave.prior_cli import generate_cmd, train_prior_cmd
from acids_rave.runtime import keep_freed_memory

log = get_logger("acids_rave")


@click.group(cls=AcidsGroup, context_settings={"max_content_width": 110})
@click.version_option(__version__, prog_name="acids-rave")
@verbosity_options
def main_group() -> None:
    """acids-rave: RAVE, a realtime audio variational autoencoder.

    \b
      acids-preprocess audio/ -o data/ | acids-rave train -o runs/x --config small
      acids-rave info runs/x/last.ckpt
      acids-rave train-prior runs/x/last.ckpt --data data/ -o runs/x-prior
      acids-rave generate runs/x-prior/best.ckpt -o out.wav --seconds 10
    """
    # freed tensors' memory is reused instead of re-faulted from the kernel (ACIDS_MALLOC=system: off)
    keep_freed_memory()


main_group.add_command(train_prior_cmd)
main_group.add_command(generate_cmd)


def _dataset_arg(data: str | None) -> Any:
    if data is not None:
        return data
    if not stdin_is_piped():
        raise UsageError("give --data DATASET, or pipe a `dataset` record on stdin")
    return last_record(None, "dataset")


def _resolve_config(config: str | None, overrides: tuple[str, ...], flags: dict[str, Any]) -> Any:
    from acids_rave.config import load_config

    extra = [f"train.{k}={v}" for k, v in flags.items() if v is not None]
    try:
        return load_config(config, list(overrides) + extra)
    except ValueError as e:
        raise UsageError(str(e)) from None


@main_group.command("train", cls=AcidsCommand)
@click.option("--data", "data", default=None, help="Dataset directory or manifest (default: a piped record).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@config_options
@click.option("--max-steps", type=int, default=None, help="Total steps (default: the preset's).")
@click.option("--phase1-steps", type=int, default=None, help="Steps before the adversarial phase.")
@click.option("--batch", type=int, default=None, help="Global batch size (split over torchrun ranks).")
@click.option("--val-every", type=int, default=None)
@click.option("--save-every", type=int, default=None)
@click.option("--emit-every", type=int, default=0, help="Also emit a checkpoint record every N steps.")
@click.option(
    "--resume/--no-resume",
    default=None,
    help="Continue OUT/last.ckpt (same step, optimizer and data position). Default: continue it when it "
    "exists (a rerun never silently replaces a run); --no-resume starts over and replaces it.",
)
@click.option("--fidelity", type=float, default=0.95, show_default=True, help="Latent variance kept.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--threads", type=int, default=None, help="torch intra-op threads (per process).")
@click.option(
    "--device", default="auto", show_default=True, help="cpu, cuda, cuda:N; auto: cuda when available."
)
@verbosity_options
def train_cmd(
    data: str | None,
    out: Path,
    config: str | None,
    overrides: tuple[str, ...],
    max_steps: int | None,
    phase1_steps: int | None,
    batch: int | None,
    val_every: int | None,
    save_every: int | None,
    emit_every: int,
    resume: bool,
    fidelity: float,
    workers: int,
    threads: int | None,
    device: str,
) -> None:
    """Train RAVE (phase 1: VAE + spectral loss; phase 2: adversarial, encoder frozen).

    Emits one `checkpoint` record on stdout at the end (and every --emit-every steps); progress, loss
    and steps/s on stderr; OUT/metrics.jsonl always, TensorBoard scalars when tensorboard is installed.
    Under `torchrun --nproc-per-node N` it trains data-parallel (DistributedDataParallel; gloo on CPU,
    NCCL on GPU), each rank on 1/N of the global --batch; rank 0 alone writes files and records.
    """
    import torch

    rank, world, local_rank = _dist_env()
    if threads:
        torch.set_num_threads(threads)
    dev = _device(device, local_rank if world > 1 else None)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if rank != 0:  # one voice on stderr
            import logging

            log.setLevel(logging.WARNING)
    try:
        _train(
            data, out, config, overrides, max_steps, phase1_steps, batch, val_every, save_every,
            emit_every, resume, fidelity, workers, dev, rank, world,
        )  # fmt: skip
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(spec: str, local_rank: int | None) -> Any:
    import torch

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank or 0)
        torch.cuda.set_device(dev)
    return dev


def _shared_dataset_arg(data: str | None, world: int, rank: int) -> Any:
    """The dataset argument; under torchrun rank 0 reads the piped record and sends it to the others."""
    if world == 1:
        return _dataset_arg(data)
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        try:
            box = [("ok", _dataset_arg(data))]
        except UsageError as e:
            box = [("usage", str(e))]
        except DataError as e:
            box = [("data", str(e))]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "usage":
        raise UsageError(value)
    if kind == "data":
        raise DataError(value)
    return value


def _train(
    data: str | None,
    out: Path,
    config: str | None,
    overrides: tuple[str, ...],
    max_steps: int | None,
    phase1_steps: int | None,
    batch: int | None,
    val_every: int | None,
    save_every: int | None,
    emit_every: int,
    resume: bool,
    fidelity: float,
    workers: int,
    device: Any,
    rank: int,
    world: int,
) -> None:
    import dataclasses

    from acids_core.config import to_toml
    from acids_rave.data import EpochBatches
    from acids_rave.train import Trainer

    flags = {
        "max_steps": max_steps,
        "phase1_steps": phase1_steps,
        "batch": batch,
        "val_every": val_every,
        "save_every": save_every,
    }
    last = out / "last.ckpt"
    main_rank = rank == 0
    if resume is None:
        resume = last.is_file()
        if resume and rank == 0:
            log.info(f"{last} exists: continuing it (--no-resume starts over)")
    if resume:
        if not last.is_file():
            raise MissingInput(f"{last}: nothing to resume")
        trainer = Trainer.resume(last, device, rank=rank, world_size=world)
        changes = {k: v for k, v in flags.items() if v is not None}
        cfg = dataclasses.replace(trainer.cfg, train=dataclasses.replace(trainer.cfg.train, **changes))
        # the model carries the config into every checkpoint: a later --resume must see these changes too
        trainer.cfg = trainer.model.config = cfg
        log.info(f"resumed {last} at step {trainer.state.step}")
    else:
        cfg = _resolve_config(config, overrides, flags)
        trainer = None
    root_arg = _shared_dataset_arg(data, world, rank)
    train_set, valid_batches, analysis_batches, cfg = _loaders(root_arg, cfg, explicit=overrides)
    if trainer is None:
        trainer = Trainer(cfg, device, rank=rank, world_size=world)
    elif cfg != trainer.cfg:
        raise UsageError("the dataset's sample rate or channels differ from the resumed run's")
    t = cfg.train
    try:
        batches = EpochBatches(train_set, t.batch, rank=rank, world=world, seed=t.seed, workers=workers)
    except ValueError as e:
        raise DataError(f"the training split: {e}") from None
    if world > 1:
        log.info(f"data parallel: {world} ranks x {t.batch // world} items per step, on {device}")
    writer = metrics = None
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(cfg))
        writer = _summary_writer(out)
        metrics_path = out / "metrics.jsonl"
        if resume and metrics_path.is_file():  # drop the steps logged after the checkpoint (a crash)
            kept = [
                line
                for line in metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= trainer.state.step
            ]
            metrics_path.write_text("".join(line + "\n" for line in kept))
        metrics = open(metrics_path, "a", encoding="utf-8")

    def emit(path: Path) -> None:
        write_record(
            make_record(
                "checkpoint",
                path=str(path.resolve()),
                format="acids-rave",
                step=trainer.state.step,
                phase=trainer.phase,
                sample_rate=cfg.sample_rate,
            )
        )

    it = batches.from_step(trainer.state.step)
    try:
        mode, done = (None if main_rank else "off"), trainer.state.step
        with Progress(t.max_steps, desc="train", unit="steps", mode=mode, initial=done) as progress:
            while trainer.state.step < t.max_steps:
                logs = trainer.step(next(it))
                step = trainer.state.step
                if not main_rank:
                    continue
                if valid_batches and (step % t.val_every == 0 or step == t.max_steps):
                    logs["validation"] = trainer.validate(valid_batches)
                    log.info(f"step {step}: validation spectral distance {logs['validation']:.4g}")
                    _report_example(trainer, valid_batches[0], out, writer, step)
                logs["step"] = step
                metrics.write(json.dumps(logs) + "\n")
                metrics.flush()
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(k, v, step)
                progress.update(1, loss=logs["loss"], phase=int(logs["phase"]))
                if step % t.save_every == 0 or (emit_every and step % emit_every == 0):
                    trainer.save(last)
                if emit_every and step % emit_every == 0:
                    emit(last)
    finally:
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()
    if not main_rank:
        return
    dims = trainer.analyse_latent(analysis_batches, fidelity)
    log.info(f"latent analysis: {dims} of {cfg.latent_size} dims keep {fidelity:.0%} of the variance")
    trainer.save(last)
    emit(last)


def _report_example(trainer: Any, batch: Any, out: Path, writer: Any, step: int) -> None:
    """Spectrogram PNG (input vs reconstruction) in OUT/validation/, audio too in TensorBoard."""
    from acids_rave.train import save_spectrograms

    x, y = trainer.reconstruct(batch[:1])
    sr = trainer.cfg.sample_rate
    png = save_spectrograms(out / "validation" / f"step-{step:08d}.png", x[0], y[0], sr)
    if writer is not None:
        writer.add_audio("validation/input", x[0, 0], step, sample_rate=sr)
        writer.add_audio("validation/reconstruction", y[0, 0].clamp(-1, 1), step, sample_rate=sr)
        if png is not None:
            import matplotlib.image as mpimg

            writer.add_image("validation/spectrograms", mpimg.imread(png), step, dataformats="HWC")


def _loaders(root_arg: Any, cfg: Any, explicit: tuple[str, ...]) -> tuple[Any, list[Any], list[Any], Any]:
    """Training dataset, validation batches, latent-analysis batches, the config fitted to the data.

    Validation and analysis batches are fixed (crops of epoch 0, no gain), the same on every rank.
    """
    import dataclasses

    try:
        from acids_data.dataset import ChunkDataset
    except ImportError as e:  # acids-data without its torch reader
        raise UsageError(f"acids-data's torch reader is unavailable: {e}") from None
    from acids_rave.data import collate_audio

    t = cfg.train
    train = ChunkDataset(root_arg, keys=["audio"], crop=None, gain_db=None, split=None)
    sr, channels, chunk = train.sample_rate, train.channels, train.chunk
    set_keys = {o.split("=", 1)[0].strip() for o in explicit}
    if sr != cfg.sample_rate:
        if "sample_rate" in set_keys:
            raise UsageError(f"the dataset is at {sr} Hz but the config says sample_rate={cfg.sample_rate}")
        log.info(f"using the dataset's sample rate, {sr} Hz")
        cfg = dataclasses.replace(cfg, sample_rate=sr)
    if channels != cfg.channels:
        if "channels" in set_keys:
            raise UsageError(
                f"the dataset has {channels} channels but the config says channels={cfg.channels}"
            )
        cfg = dataclasses.replace(cfg, channels=channels)
    if chunk < t.n_signal:
        raise DataError(
            f"dataset chunks are {chunk} samples, shorter than train.n_signal={t.n_signal}: "
            "re-preprocess with longer chunks or --set train.n_signal=N "
            f"(a multiple of {cfg.compression_ratio})"
        )
    common = {"keys": ["audio"], "crop": t.n_signal, "valid_fraction": t.valid_fraction, "seed": t.seed}
    train = ChunkDataset(root_arg, gain_db=t.gain_db, split="train", **common)
    valid = ChunkDataset(root_arg, gain_db=None, split="valid", **common)
    fixed = ChunkDataset(root_arg, gain_db=None, split="train", **common)
    valid.set_epoch(0)
    fixed.set_epoch(0)
    if len(train) == 0:
        raise DataError("the training split of the dataset is empty")

    def fixed_batches(ds: Any, limit: int) -> list[Any]:
        n = min(len(ds), limit)
        return [collate_audio([ds[j] for j in range(i, min(i + t.batch, n))]) for i in range(0, n, t.batch)]

    valid_batches = fixed_batches(valid, 64)
    analysis_batches = fixed_batches(fixed, 32 * t.batch)
    log.info(f"data: {len(train)} training and {len(valid)} validation chunks at {sr} Hz")
    return train, valid_batches, analysis_batches, cfg


def _summary_writer(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed (pip install 'acids-rave[train]'): metrics.jsonl only")
        return None
    return SummaryWriter(str(out))


@main_group.command("info", cls=AcidsCommand)
@click.argument("model", default="v2")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (presets only)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@verbosity_options
def info_cmd(model: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Describe a checkpoint or a preset: sizes, compression, latent dims, fidelity, streaming latency.

    A prior checkpoint (train-prior) is described too: its size, validation, and the model it belongs to.

    \b
      acids-rave info runs/x/last.ckpt
      acids-rave info small --json
      acids-rave info runs/x-prior/best.ckpt
    """
    from acids_core.config import to_dict
    from acids_rave.config import PRESETS
    from acids_rave.discriminator import Discriminator
    from acids_rave.model import Rave, count_parameters

    step = None
    if model in PRESETS or model.endswith(".toml"):
        m = Rave(_resolve_config(model, overrides, {}))
    else:
        from acids_rave.checkpoint import PRIOR_FORMAT, load

        try:
            m, env = load(model)
        except DataError as e:
            if f"'{PRIOR_FORMAT}'" not in str(e):
                raise
            _prior_info(model, as_json)  # a latent prior's checkpoint
            return
        step = env["payload"].get("step")
    cfg = m.config
    sr = cfg.sample_rate
    info = {
        "source": model,
        "step": step,
        "sample_rate": sr,
        "channels": cfg.channels,
        "causal": cfg.causal,
        "compression_ratio": m.compression_ratio,
        "latent_rate_hz": sr / m.compression_ratio,
        "latent_size": cfg.latent_size,
        "latent_dims": m.n_latent,
        "fidelity_table": [round(float(v), 4) for v in m.fidelity_table()],
        "parameters": {
            "encoder": count_parameters(m.encoder),
            "decoder": count_parameters(m.decoder),
            "discriminator": count_parameters(Discriminator(cfg.discriminator, cfg.channels)),
        },
        "latency_samples": m.latency if cfg.causal else None,
        "latency_ms": round(1000 * m.latency / sr, 2) if cfg.causal else None,
        "config": to_dict(cfg),
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    p = info["parameters"]
    lines = [
        f"source            {model}" + (f" (step {step})" if step is not None else ""),
        f"sample rate       {sr} Hz, {cfg.channels} channel(s)",
        f"architecture      encoder {cfg.encoder.kind} / decoder {cfg.decoder.kind}, "
        f"capacity {cfg.encoder.capacity}",
        f"initialisation    {_init_text(cfg.init)}",
        f"parameters        encoder {p['encoder']:,}  decoder {p['decoder']:,}  "
        f"discriminator {p['discriminator']:,}",
        f"compression       {m.compression_ratio}x ({info['latent_rate_hz']:.2f} Hz latent)",
        f"latent            {m.n_latent} of {cfg.latent_size} dims in use",
    ]
    if cfg.causal:
        lines.append(
            f"streaming         causal; latency {m.latency} samples ({info['latency_ms']} ms)"
            " beyond the buffer"
            f" (buffer: any multiple of {m.compression_ratio})"
        )
    else:
        lines.append("streaming         none (causal = false: offline use only)")
    table = info["fidelity_table"]
    marks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= len(table)]
    lines.append("fidelity          " + "  ".join(f"{k}:{table[k - 1]:.3f}" for k in marks))
    click.echo("\n".join(lines))


def _init_text(init: Any) -> str:
    """One line for ``config.init`` (how the weights were, or will be, initialised)."""
    parts = ["zero biases" if init.zero_bias else "random biases"]
    parts.append(f"trunk gain {init.trunk_gain:g}" if init.trunk_gain else "default gains")
    return ", ".join(parts) + ("" if init.zero_bias or init.trunk_gain else " (PyTorch's default)")


def _prior_info(path: str, as_json: bool) -> None:
    """``info`` of a prior checkpoint."""
    from acids_core.config import to_dict
    from acids_rave.checkpoint import load_prior
    from acids_rave.prior import prior_info

    prior, env = load_prior(path)
    p = env["payload"]
    model = p.get("model") or {}
    validation = p.get("validation") or {}
    info = {
        "source": path,
        "kind": "prior",
        "step": p.get("step"),
        **prior_info(prior),
        "validation": validation,
        "model": model,
        "config": to_dict(prior.cfg),
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    lines = [
        f"source            {path} (latent prior, step {info['step']})",
        f"prior             {info['dims']} dims x {info['bins']} bins, receptive field "
        f"{info['receptive_field']} frames, {info['parameters']:,} parameters",
    ]
    if "cross_entropy" in validation:
        lines.append(
            f"validation        {validation['cross_entropy']:.4f} nats/dim (step {validation.get('step')});"
            f" uniform {validation.get('uniform', float('nan')):.4f}, marginal"
            f" {validation.get('marginal', float('nan')):.4f}"
        )
    lines.append(
        f"model             {model.get('path')} (step {model.get('step')}, weights "
        f"{str(model.get('sha256'))[:12]})"
    )
    click.echo("\n".join(lines))


def _load_model(path: str, threads: int | None) -> Any:
    import torch

    from acids_rave.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(path)
    model.fuse()
    return model


#: long inputs of transfer / encode / decode go through the model in blocks of about this many samples
DEFAULT_BLOCK = 2**19


def _block_option(f: Any) -> Any:
    return click.option(
        "--block",
        type=int,
        default=None,
        help="Long inputs go through the model in blocks of this many samples (a multiple of the compression "
        "ratio), with its cached streaming convolutions: the same result, memory bounded by the block. "
        f"Default: about {DEFAULT_BLOCK} (12 s at 44.1 kHz); 0: one call for the whole input.",
    )(f)


def _block(m: Any, block: int | None) -> int:
    """Samples per block (0: whole input) for model ``m``; the default rounded to its compression ratio."""
    r = m.compression_ratio
    if block is None:
        return max(1, round(DEFAULT_BLOCK / r)) * r
    if block < 0 or block % r:
        raise UsageError(f"--block must be 0 or a positive multiple of the compression ratio {r}")
    return block


def _run(m: Any, method: str, x: Any, block: int) -> Any:
    """``m.encode/decode/forward(x)``, in blocks when ``block`` (samples) is set and the model can stream."""
    if not block:
        return getattr(m, method)(x)
    return m.in_blocks(method, x, block // m.compression_ratio if method == "decode" else block)


def _read_audio(path: Path, model: Any) -> Any:
    import torch

    from acids_data.audio import load

    if not path.is_file():
        raise MissingInput(f"{path}: no such audio file")
    return torch.from_numpy(load(path, model.sample_rate, model.channels))[None]  # (1, C, T)


def _write_audio_record(out: Path, y: Any, m: Any, source: Path, **extra: Any) -> None:
    """Write ``y`` (1, C, T) as a WAV at ``out`` and emit its `audio` record (plus ``extra`` fields)."""
    _write_audio(out, y, m.sample_rate)
    write_record(
        make_record(
            "audio",
            path=str(out.resolve()),
            sample_rate=m.sample_rate,
            channels=m.channels,
            frames=int(y.shape[-1]),
            source=str(source),
            **extra,
        )
    )


def _write_audio(path: Path, y: Any, sample_rate: int) -> None:
    import soundfile as sf

    from acids_core.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        sf.write(f, y[0].T.numpy(), sample_rate, format=path.suffix.lstrip(".").upper() or "WAV")


@main_group.command("transfer", cls=AcidsCommand)
@click.argument("model")
@click.argument("inp", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--threads", type=int, default=None)
@_block_option
@verbosity_options
def transfer_cmd(model: str, inp: Path, out: Path, threads: int | None, block: int | None) -> None:
    """Timbre transfer: any audio IN through MODEL (encode + decode) to OUT; emits an `audio` record.

    \b
      acids-rave transfer runs/x/last.ckpt voice.wav voice-as-violin.wav
    """
    import torch

    m = _load_model(model, threads)
    b = _block(m, block)
    x = _read_audio(inp, m)
    with torch.inference_mode():
        y = _run(m, "forward", x, b)
    _write_audio_record(out, y, m, inp)


@main_group.command("encode", cls=AcidsCommand)
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--threads", type=int, default=None)
@_block_option
@verbosity_options
def encode_cmd(
    model: str, inputs: tuple[Path, ...], out: Path, threads: int | None, block: int | None
) -> None:
    """Audio files -> latents (.npy, (dims, frames) float32 in OUT); one `latent` record per file."""
    import numpy as np
    import torch

    from acids_core.atomic import atomic_write

    m = _load_model(model, threads)
    b = _block(m, block)
    out.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        with torch.inference_mode():
            z = _run(m, "encode", _read_audio(path, m), b)[0].numpy()
        target = out / f"{path.stem}.npy"
        with atomic_write(target, "wb") as f:
            np.save(f, z)
        write_record(
            make_record(
                "latent",
                path=str(target.resolve()),
                source=str(path),
                model=str(model),
                dims=int(z.shape[0]),
                frames=int(z.shape[1]),
                frame_rate=m.sample_rate / m.compression_ratio,
            )
        )


@main_group.command("decode", cls=AcidsCommand)
@click.argument("model")
@click.argument("latents", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--threads", type=int, default=None)
@_block_option
@verbosity_options
def decode_cmd(
    model: str, latents: tuple[Path, ...], out: Path, threads: int | None, block: int | None
) -> None:
    """Latent .npy files (or piped `latent` records) -> WAV files in OUT; one `audio` record each."""
    import numpy as np
    import torch

    from acids_core.records import read_records

    paths = list(latents)
    if not paths:
        if not stdin_is_piped():
            raise UsageError("give LATENT files or pipe `latent` records")
        paths = [Path(r["path"]) for r in read_records(None, kind="latent")]
    m = _load_model(model, threads)
    b = _block(m, block)
    for path in paths:
        if not path.is_file():
            raise MissingInput(f"{path}: no such latent file")
        z = np.load(path)
        if z.ndim != 2 or z.shape[0] > m.latent_size:
            raise DataError(f"{path}: expected (dims <= {m.latent_size}, frames), got {z.shape}")
        with torch.inference_mode():
            y = _run(m, "decode", torch.from_numpy(z.astype(np.float32))[None], b)
        target = out / f"{path.stem}.wav"
        _write_audio_record(target, y, m, path)


@main_group.command("stream", cls=AcidsCommand)
@click.argument("model")
@click.option("--block", type=int, default=None, help="Samples per block (default: the compression ratio).")
@click.option("--threads", type=int, default=1, show_default=True)
@verbosity_options
def stream_cmd(model: str, block: int | None, threads: int) -> None:
    """Raw float32 PCM (interleaved channels) on stdin -> the streaming model -> the same on stdout.

    \b
      sox in.wav -t raw -e float -b 32 -r 44100 -c 1 - | acids-rave stream model.ckpt | ...
    A short last block is zero-padded; its padding is not written.
    """
    import numpy as np
    import torch

    m = _load_model(model, threads)
    block = block or m.compression_ratio
    if block % m.compression_ratio:
        raise UsageError(f"--block must be a multiple of the compression ratio {m.compression_ratio}")
    try:
        m.set_streaming(True)
    except ValueError as e:
        raise UsageError(f"{model}: {e}") from None
    n_bytes = block * m.channels * 4
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    with torch.inference_mode():
        while True:
            data = src.read(n_bytes)
            if not data:
                break
            frames = len(data) // (4 * m.channels)
            x = np.zeros((block, m.channels), dtype=np.float32)
            x.reshape(-1)[: frames * m.channels] = np.frombuffer(data[: frames * m.channels * 4], "<f4")
            y = m(torch.from_numpy(x.T.copy())[None])[0].T.numpy()
            dst.write(np.ascontiguousarray(y[:frames], dtype="<f4").tobytes())
            dst.flush()
            if frames < block:
                break


def main() -> None:
    """Console script ``acids-rave``."""
    main_group(prog_name="acids-rave")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
