"""``acids-rave train-prior`` and ``acids-rave generate``: a latent prior, and audio from it without input.

Parsing and I/O only (the model is :mod:`acids_rave.prior`, the training loop
:class:`acids_rave.train.PriorTrainer`); torch is imported inside the commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from acids_core.cli import AcidsCommand, verbosity_options
from acids_core.config import config_options
from acids_core.errors import DataError, MissingInput, UsageError
from acids_core.log import Progress, get_logger
from acids_core.records import make_record, write_record

log = get_logger("acids_rave")

#: the latent cache in the run directory (the dataset encoded once by the frozen model)
LATENTS = "latents.pt"


def _load_rave(path: str | Path) -> tuple[Any, dict[str, Any], str]:
    """(model fused for inference, envelope, fingerprint of its weights)."""
    from acids_rave import checkpoint
    from acids_rave.prior import model_fingerprint

    model, env = checkpoint.load(path)
    fingerprint = model_fingerprint(model)  # of the stored (unfused) weights
    model.fuse()
    return model, env, fingerprint


def _encode_split(model: Any, root_arg: Any, split: str, cfg: Any, device: Any) -> Any:
    """Latents (N, D, frames) of every whole chunk of one split of the dataset."""
    import torch

    from acids_data.dataset import ChunkDataset

    ds = ChunkDataset(
        root_arg, keys=["audio"], crop=None, gain_db=None, split=split,
        valid_fraction=cfg.valid_fraction, seed=cfg.seed,
    )  # fmt: skip
    if ds.sample_rate != model.sample_rate or ds.channels != model.channels:
        raise DataError(
            f"the dataset is {ds.sample_rate} Hz / {ds.channels} channel(s), the model "
            f"{model.sample_rate} Hz / {model.channels}: preprocess the audio for the model "
            f"(acids-preprocess --sample-rate {model.sample_rate} --channels {model.channels})"
        )
    frames = ds.chunk // model.compression_ratio  # whole frames only (encode pads a partial one)
    if frames < 2:
        raise DataError(
            f"dataset chunks are {ds.chunk} samples: less than 2 latent frames of {model.compression_ratio}"
        )
    if len(ds) == 0:
        raise DataError(
            f"the {split} split of the dataset is empty: the prior needs held-out files "
            "(a dataset of 2 source files or more)"
        )
    out = []
    with torch.inference_mode(), Progress(len(ds), desc=f"encode {split}", unit="chunks") as progress:
        for i in range(0, len(ds), 8):
            x = torch.stack([ds[j]["audio"] for j in range(i, min(i + 8, len(ds)))]).to(device)
            out.append(model.encode(x)[..., :frames].float().cpu())
            progress.update(x.shape[0])
    return torch.cat(out)


def _latents(model: Any, fingerprint: str, root_arg: Any, cfg: Any, out: Path, device: Any) -> Any:
    """The cached latents {"train", "valid"} of RUN, encoding the dataset when the cache is not for
    this model, dataset and split."""
    import torch

    from acids_core.atomic import atomic_write
    from acids_data.dataset import ChunkDataset

    source = str(Path(ChunkDataset(root_arg, keys=["audio"]).reader.root).resolve())
    key = {"model_sha256": fingerprint, "dataset": source, "valid_fraction": cfg.valid_fraction}
    path = out / LATENTS
    if path.is_file():
        try:
            cache = torch.load(path, weights_only=True)
            if all(cache.get(k) == v for k, v in key.items()):
                log.info(f"latents: reusing {path}")
                return cache
        except Exception:  # a damaged cache is recomputed
            pass
        log.info(f"latents: {path} is for another model or dataset: encoding again")
    cache = {**key, **{s: _encode_split(model, root_arg, s, cfg, device) for s in ("train", "valid")}}
    with atomic_write(path, "wb") as f:
        torch.save(cache, f)
    return cache


@click.command("train-prior", cls=AcidsCommand)
@click.argument("model", metavar="MODEL.ckpt")
@click.option("--data", "data", default=None, help="Dataset directory or manifest (default: a piped record).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@config_options
@click.option("--max-steps", type=int, default=None, help="Total steps (default: the preset's).")
@click.option("--batch", type=int, default=None, help="Sequences per step.")
@click.option("--frames", type=int, default=None, help="Latent frames per sequence (<= frames per chunk).")
@click.option("--val-every", type=int, default=None, help="Validation (and metrics) every N steps.")
@click.option(
    "--resume/--no-resume",
    default=None,
    help="Continue OUT/last.ckpt (default when it exists); --no-resume starts over and replaces it.",
)
@click.option("--threads", type=int, default=None, help="torch intra-op threads.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N; auto: cuda if any.")
@verbosity_options
def train_prior_cmd(
    model: str,
    data: str | None,
    out: Path,
    config: str | None,
    overrides: tuple[str, ...],
    max_steps: int | None,
    batch: int | None,
    frames: int | None,
    val_every: int | None,
    resume: bool | None,
    threads: int | None,
    device: str,
) -> None:
    """Train a causal latent prior for MODEL (a trained RAVE checkpoint), for `generate`.

    The dataset's chunks are encoded once by the frozen model (posterior means in its PCA coordinates,
    the dims kept at its fidelity; cached in OUT/latents.pt); a held-out split by source file gives the
    validation cross-entropy (nats per latent dim and frame; the uniform baseline is log(bins)).
    Presets (--config): small (default, minutes on one CPU core), tiny (tests), large (the official
    prior's size, for a GPU). OUT/last.ckpt is the latest state (resumed from), OUT/best.ckpt the one with
    the lowest validation cross-entropy; the `checkpoint` record emitted at the end points at best.ckpt.
    OUT/metrics.jsonl per step.

    \b
      acids-rave train-prior runs/x/last.ckpt --data data/ -o runs/x-prior
      acids-preprocess audio/ -o data/ | acids-rave train-prior runs/x/last.ckpt -o runs/p --max-steps 500
      acids-rave generate runs/x-prior/best.ckpt -o out.wav --seconds 10 --temperature 0.8
    """
    import dataclasses

    import torch

    from acids_rave.cli import _dataset_arg, _device
    from acids_rave.config import load_prior_config, validate_prior
    from acids_rave.prior import marginal_cross_entropy, prior_info
    from acids_rave.train import PriorTrainer

    if threads:
        torch.set_num_threads(threads)
    dev = _device(device, None)
    flags = {"max_steps": max_steps, "batch": batch, "frames": frames, "val_every": val_every}
    changes = {k: v for k, v in flags.items() if v is not None}
    last = out / "last.ckpt"
    if resume is None:
        resume = last.is_file()
        if resume:
            log.info(f"{last} exists: continuing it (--no-resume starts over)")
    if resume and not last.is_file():
        raise MissingInput(f"{last}: nothing to resume")
    m, env, fingerprint = _load_rave(model)
    m.to(dev)
    trainer: PriorTrainer | None = None
    if resume:
        trainer, _ = PriorTrainer.resume(last, dev)
        belongs = trainer.model_info.get("sha256")
        if belongs != fingerprint:
            raise DataError(
                f"{last} is a prior for another model ({trainer.model_info.get('path')}, step "
                f"{trainer.model_info.get('step')}): give that model, or --no-resume to start over"
            )
        try:
            cfg = dataclasses.replace(trainer.cfg, **changes)
            validate_prior(cfg)
        except ValueError as e:
            raise UsageError(str(e)) from None
        log.info(f"resumed {last} at step {trainer.step_count}")
    else:
        try:
            cfg = load_prior_config(config, list(overrides) + [f"{k}={v}" for k, v in changes.items()])
        except ValueError as e:
            raise UsageError(str(e)) from None
    root_arg = _dataset_arg(data)
    out.mkdir(parents=True, exist_ok=True)
    cache = _latents(m, fingerprint, root_arg, cfg, out, dev)
    train_z, valid_z = cache["train"], cache["valid"]
    chunk_frames = int(train_z.shape[-1])
    if cfg.frames > chunk_frames:
        if frames is not None:
            raise UsageError(f"--frames {frames}: the dataset's chunks hold {chunk_frames} latent frames")
        log.info(f"sequences of {chunk_frames} frames (the dataset's chunks; the preset says {cfg.frames})")
        cfg = dataclasses.replace(cfg, frames=chunk_frames)
    model_info = {
        "path": str(Path(model).resolve()),
        "sha256": fingerprint,
        "step": int(env["payload"].get("step", 0)),
        "latent_dims": int(m.n_latent),
        "sample_rate": int(m.sample_rate),
        "channels": int(m.channels),
        "compression_ratio": int(m.compression_ratio),
    }
    if trainer is None:
        trainer = PriorTrainer(cfg, int(m.n_latent), dev, model_info=model_info)
        trainer.prior.set_statistics(train_z.to(dev))
    else:
        trainer.cfg = trainer.prior.cfg = cfg
    prior = trainer.prior
    with torch.no_grad():
        train_k = prior.quantise(train_z.to(dev)).cpu()
        valid_k = prior.quantise(valid_z.to(dev)).cpu()
    uniform = math.log(cfg.bins)
    marginal = marginal_cross_entropy(train_k, valid_k, cfg.bins)
    info = prior_info(prior)
    log.info(
        f"prior: {info['dims']} dims x {info['bins']} bins, receptive field {info['receptive_field']} frames,"
        f" {info['parameters']:,} parameters; {train_k.shape[0]} training and {valid_k.shape[0]} validation"
        f" sequences of {chunk_frames} frames; baselines: uniform {uniform:.4f}, marginal {marginal:.4f} nats"
    )

    metrics_path = out / "metrics.jsonl"
    if resume and metrics_path.is_file():  # drop the steps logged after the checkpoint (a crash)
        kept = [
            line
            for line in metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= trainer.step_count
        ]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    validation: dict[str, float] = {"uniform": uniform, "marginal": marginal}
    best = out / "best.ckpt"  # the lowest validation cross-entropy so far (what the record points at)
    best_value = math.inf
    if resume and best.is_file():
        from acids_rave import checkpoint

        best_value = float(checkpoint.load_prior(best)[1]["payload"]["validation"]["cross_entropy"])

    def save() -> None:
        trainer.save(last, validation=validation)

    with (
        open(metrics_path, "a", encoding="utf-8") as metrics,
        Progress(cfg.max_steps, desc="train-prior", unit="steps") as progress,
    ):
        progress.update(trainer.step_count)
        while trainer.step_count < cfg.max_steps:
            logs: dict[str, float] = {"cross_entropy": trainer.step(train_k)}
            step = trainer.step_count
            if step % cfg.val_every == 0 or step == cfg.max_steps:
                logs["validation"] = trainer.validate(valid_k)
                validation.update(step=step, cross_entropy=logs["validation"])
                if logs["validation"] < best_value:
                    best_value = logs["validation"]
                    trainer.save(best, validation=dict(validation))
                log.info(
                    f"step {step}: validation cross-entropy {logs['validation']:.4f} nats "
                    f"(uniform {uniform:.4f}, marginal {marginal:.4f})"
                )
            metrics.write(json.dumps({"step": step, **logs}) + "\n")
            metrics.flush()
            progress.update(1, loss=logs["cross_entropy"])
            if step % cfg.save_every == 0:
                save()
    if validation.get("step") != trainer.step_count:  # nothing trained in this call: measure anyway
        validation.update(step=trainer.step_count, cross_entropy=trainer.validate(valid_k))
    save()
    if validation["cross_entropy"] < best_value or not best.is_file():
        best_value = validation["cross_entropy"]
        trainer.save(best, validation=dict(validation))
    from acids_rave import checkpoint

    best_validation = checkpoint.load_prior(best)[1]["payload"]["validation"]
    log.info(
        f"best validation cross-entropy {best_validation['cross_entropy']:.4f} nats at step "
        f"{best_validation['step']}: {best}"
    )
    write_record(
        make_record(
            "checkpoint",
            path=str(best.resolve()),
            last=str(last.resolve()),
            format="acids-rave-prior",
            step=trainer.step_count,
            best_step=int(best_validation["step"]),
            model=model_info["path"],
            sample_rate=model_info["sample_rate"],
            validation_cross_entropy=best_validation["cross_entropy"],
            uniform_cross_entropy=uniform,
            marginal_cross_entropy=marginal,
        )
    )


@click.command("generate", cls=AcidsCommand)
@click.argument("prior_path", metavar="PRIOR.ckpt")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seconds", type=float, default=4.0, show_default=True, help="Length of the audio.")
@click.option(
    "--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature (0: arg-max)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the sampling.")
@click.option("--model", "model", default=None, help="RAVE checkpoint (default: the one the prior recorded).")
@click.option("--threads", type=int, default=None, help="torch intra-op threads.")
@verbosity_options
def generate_cmd(
    prior_path: str,
    out: Path,
    seconds: float,
    temperature: float,
    seed: int,
    model: str | None,
    threads: int | None,
) -> None:
    """Audio without input: sample latent frames from PRIOR, decode them with its RAVE model.

    Emits an `audio` record. The same seed and temperature give the same audio; --temperature 0 takes
    the most likely bin of every frame. The RAVE model must be the checkpoint the prior was trained for
    (same weights and latent PCA): another one is refused.

    \b
      acids-rave generate runs/x-prior/best.ckpt -o out.wav --seconds 10
      acids-rave generate runs/x-prior/best.ckpt -o calm.wav --temperature 0.5 --seed 7 --model copy/last.ckpt
    """
    import torch

    from acids_rave import checkpoint
    from acids_rave.cli import _write_audio_record
    from acids_rave.prior import sample

    if not seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {seconds}")
    if not temperature >= 0:
        raise UsageError(f"--temperature must be >= 0, got {temperature}")
    if threads:
        torch.set_num_threads(threads)
    prior, _, m, model_path = checkpoint.load_prior_and_model(
        prior_path, model, hint=", or give it with --model"
    )
    m.fuse()
    n = max(1, round(seconds * m.sample_rate))
    frames = math.ceil(n / m.compression_ratio)
    with torch.inference_mode():
        z = sample(prior, frames, temperature=temperature, seed=seed)
        y = m.decode(z)[..., :n]
    _write_audio_record(out, y, m, prior_path, model=str(model_path), seed=seed, temperature=temperature)
