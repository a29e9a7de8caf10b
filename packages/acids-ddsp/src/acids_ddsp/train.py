"""Training: the optimisation step, and the loop over an acids-data dataset with resumable checkpoints.

The only module that imports optimizers (and TensorBoard, optionally). At every checkpoint a run writes
``plots/step-NNNNNNN.png`` (loss curve, target vs resynthesis spectrograms; needs matplotlib) and, with
TensorBoard installed, the loss and learning rate every step and the target/resynthesis audio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from acids_core.config import to_toml
from acids_core.errors import DataError
from acids_core.log import Progress, get_logger
from acids_ddsp import checkpoint
from acids_ddsp.config import DDSPConfig
from acids_ddsp.losses import MultiScaleSpectralLoss, from_config
from acids_ddsp.model import DDSP

log = get_logger(__name__)

LAST = "last.ckpt"


def make_optimizer(
    model: DDSP, cfg: DDSPConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with magenta's exponential decay: lr * decay ** (step / decay_steps)."""
    t = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: t.lr_decay ** (step / t.lr_decay_steps))
    return opt, sched


def batch_tensors(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(audio (B, 1, T) mono, f0 (B, F), loudness (B, F)) from a ChunkDataset batch."""
    audio = batch["audio"]
    if audio.dim() == 2:
        audio = audio.unsqueeze(1)
    audio = audio.mean(dim=1, keepdim=True)
    return audio, batch["f0"].reshape(audio.shape[0], -1), batch["loudness"].reshape(audio.shape[0], -1)


def train_step(
    model: DDSP,
    loss_fn: MultiScaleSpectralLoss,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    batch: Mapping[str, torch.Tensor],
    grad_clip: float,
    forward: torch.nn.Module | None = None,
) -> float:
    """One optimisation step on a batch; returns the loss (averaged over the ranks when distributed).

    ``forward`` is what runs the model (its DistributedDataParallel wrapper; ``model`` by default). The
    loss is a mean over the items, and DDP averages the gradients of equal shards, so N ranks on a global
    batch compute the gradient of one process on it (up to float summation order).
    """
    model.train()
    audio, f0, loudness = batch_tensors(batch)
    frames = min(f0.shape[-1], audio.shape[-1] // model.hop)
    audio = audio[..., : frames * model.hop]
    if model.has_encoder:  # the autoencoder variant encodes the target audio itself
        out = (forward or model)(f0[:, :frames], loudness[:, :frames], audio)
    else:
        out = (forward or model)(f0[:, :frames], loudness[:, :frames])
    loss = loss_fn(out, audio)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    value = loss.detach()
    if forward is not None and forward is not model and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value = value / torch.distributed.get_world_size()
    return float(value)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The item order of an epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _batches(
    dataset: Any, batch_size: int, seed: int, epoch: int, skip: int, rank: int = 0, world: int = 1
) -> Iterator[tuple[int, int, Any]]:
    """Endless (epoch, index in epoch, batch). Crops come from ``set_epoch`` and the order from
    :func:`epoch_order`, so a resumed run (skipping the batches already done) sees the same data. With
    ``world`` ranks, ``batch_size`` is the global batch and rank r takes its items r, r + world, ..."""
    collate = torch.utils.data.default_collate
    while True:
        dataset.set_epoch(epoch)
        order = epoch_order(len(dataset), seed, epoch)
        n_batches = max(1, len(order) // batch_size)
        for i in range(skip, n_batches):
            idx = order[i * batch_size : (i + 1) * batch_size][rank::world]
            yield epoch, i, collate([dataset[j] for j in idx])
        epoch, skip = epoch + 1, 0


def _report(
    model: DDSP,
    batch: Mapping[str, torch.Tensor],
    step: int,
    history: list[tuple[int, float]],
    out: Path,
    writer: Any,
) -> None:
    """Resynthesise the first item of ``batch`` (eval mode, no RNG used) for the PNG and TensorBoard."""
    from acids_ddsp import plots

    audio, f0, loudness = batch_tensors(batch)
    frames = min(f0.shape[-1], audio.shape[-1] // model.hop)
    was_training = model.training
    model.eval()
    target = audio[0, 0, : frames * model.hop]
    with torch.no_grad():
        resynth = model(f0[:1, :frames], loudness[:1, :frames], target[None, None])[0, 0]
    model.train(was_training)
    if writer is not None:
        writer.add_audio("audio/target", target.clamp(-1, 1), step, sample_rate=model.sample_rate)
        writer.add_audio("audio/resynthesis", resynth.clamp(-1, 1), step, sample_rate=model.sample_rate)
    if plots.available() and history:
        (out / "plots").mkdir(exist_ok=True)
        steps, losses = zip(*history, strict=True)
        plots.training_png(
            out / "plots" / f"step-{step:07d}.png",
            steps,
            losses,
            target.numpy(),
            resynth.numpy(),
            model.sample_rate,
        )


def dataset_stats(data: Any, indices: Any, limit: int = 512) -> dict[str, Any]:
    """Feature statistics of up to ``limit`` training chunks, for :mod:`acids_ddsp.transfer`."""
    from acids_data.reader import ShardReader
    from acids_ddsp.transfer import feature_stats

    with ShardReader(data, keys=("f0", "f0_confidence", "loudness")) as reader:
        step = max(1, len(indices) // limit)
        return feature_stats(reader.read(int(i)) for i in list(indices)[::step][:limit])


def mean_latent(model: DDSP, data: Any, indices: Any, limit: int = 64) -> torch.Tensor:
    """The mean z of the encoder over up to ``limit`` whole training chunks (eval mode, fresh state each)."""
    from acids_data.reader import ShardReader

    was_training = model.training
    model.eval()
    total, count = torch.zeros(model.z_dim), 0
    with ShardReader(data, keys=("audio",)) as reader, torch.no_grad():
        step = max(1, len(indices) // limit)
        for i in list(indices)[::step][:limit]:
            raw = reader.read(int(i))["audio"]
            audio = torch.from_numpy(raw).reshape(-1, raw.shape[-1]).mean(dim=0)
            audio = audio[: audio.shape[-1] // model.hop * model.hop]
            if audio.numel():
                z = model.encode(audio[None])[0]
                total += z.sum(dim=0)
                count += z.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (WORLD_SIZE > 1): joins the gloo process group; else (0, 1)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return torch.distributed.get_rank(), world


def train(
    cfg: DDSPConfig,
    data: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = True,
    checkpoint_every: int = 500,
    tensorboard: bool = True,
    steps: int | None = None,
) -> Path:
    """Train on an acids-data dataset (features loudness + f0 at the model's hop); return the last checkpoint.

    The run directory gets ``config.toml`` and ``last.ckpt`` (atomic, every ``checkpoint_every`` steps and at
    the end). With ``resume`` a run continues from ``last.ckpt`` when it exists (model, optimizer, schedule,
    step, epoch and RNG), and gives the same weights as an uninterrupted run (single process).

    Under torchrun (``WORLD_SIZE`` > 1) the ranks share ``train.batch_size`` (the global batch, which must
    divide evenly), gradients are averaged by DistributedDataParallel over gloo, and rank 0 alone writes
    checkpoints, logs and plots: the weights follow a single-process run on the same global batch.
    """
    from acids_data.dataset import ChunkDataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = steps if steps is not None else cfg.train.steps
    crop = round(cfg.train.crop_seconds * cfg.sample_rate) // cfg.hop * cfg.hop
    ds = ChunkDataset(data, keys=("audio", "loudness", "f0"), crop=crop, split="train", seed=cfg.train.seed)
    if ds.reader.sample_rate != cfg.sample_rate or ds.reader.feature_hop != cfg.hop:
        raise DataError(
            f"dataset is {ds.reader.sample_rate} Hz with feature hop {ds.reader.feature_hop}, the model "
            f"wants {cfg.sample_rate} Hz and hop {cfg.hop}: re-run acids-preprocess with --sample-rate "
            f"{cfg.sample_rate} --feature-hop {cfg.hop}, or --set sample_rate=/hop= to match the data"
        )
    if len(ds) == 0:
        raise DataError(f"{data}: no training chunks")
    rank, world = distributed()
    if cfg.train.batch_size % world:
        raise DataError(f"train.batch_size={cfg.train.batch_size} does not split over {world} processes")
    lead = rank == 0

    stats = dataset_stats(data, ds.indices)
    torch.manual_seed(cfg.train.seed)
    model = DDSP(cfg)
    model.noise.shard, model.noise.shards = rank, world
    loss_fn = from_config(cfg)
    opt, sched = make_optimizer(model, cfg)
    step, epoch, done = 0, 0, 0
    history: list[tuple[int, float]] = []  # (step, loss), every step (a few MB for a long run)
    last = out / LAST
    if resume and last.exists():
        env = checkpoint.read(last)
        if checkpoint.config_of(env) != cfg:
            raise DataError(f"{last} was trained with another config; use a new run directory or --no-resume")
        p = env["payload"]
        model.load_state_dict(p["model"])
        opt.load_state_dict(p["optimizer"])
        sched.load_state_dict(p["scheduler"])
        step, epoch, done = int(p["step"]), int(p["epoch"]), int(p["batch"])
        history = [(int(s), float(v)) for s, v in p.get("history", [])]
        torch.set_rng_state(p["rng"])
        log.info("resumed %s at step %d", last, step)
    forward: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)  # broadcasts rank 0's weights; averages gradients
        log.info("data parallel: rank %d of %d, %d items each", rank, world, cfg.train.batch_size // world)
    if lead:
        (out / "config.toml").write_text(to_toml(cfg))

    writer = None
    if tensorboard and lead:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:
            log.warning("tensorboard is not installed (pip install acids-ddsp[train]): no TensorBoard logs")
    from acids_ddsp import plots

    if lead and not plots.available():
        log.warning("matplotlib is not installed (pip install acids-ddsp[train]): no PNG plots")

    def save() -> None:
        if not lead:
            return
        if model.has_encoder:  # the mean z of `transfer --mean-z`, `stream --controls` and nn~ `forward`
            model.z_mean.copy_(mean_latent(model, data, ds.indices))
        checkpoint.save(
            model,
            last,
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            step=step,
            epoch=epoch,
            batch=done,
            rng=torch.get_rng_state(),
            stats=stats,
            history=history,
        )

    t0 = time.monotonic()
    with Progress(total=total, desc="train", unit="steps", mode=None if lead else "off", initial=step) as bar:
        batches = _batches(ds, cfg.train.batch_size, cfg.train.seed, epoch, done, rank, world)
        batch = None
        while step < total:
            epoch, index, batch = next(batches)
            done = index + 1  # batches of this epoch consumed (the checkpoint resumes after them)
            loss = train_step(model, loss_fn, opt, sched, batch, cfg.train.grad_clip, forward)
            if not math.isfinite(loss):
                raise DataError(f"loss is {loss} at step {step}: lower train.lr or check the data")
            step += 1
            history.append((step, loss))
            bar.update(1, loss=f"{loss:.3f}")
            if writer is not None:
                writer.add_scalar("loss/spectral", loss, step)
                writer.add_scalar("lr", sched.get_last_lr()[0], step)
            if step % checkpoint_every == 0 and lead:
                save()
                _report(model, batch, step, history, out, writer)
    save()
    if lead and batch is not None and step % checkpoint_every:
        _report(model, batch, step, history, out, writer)
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.barrier()  # the checkpoint exists before any rank returns
        torch.distributed.destroy_process_group()
    log.info("trained %d steps in %.0f s; checkpoint %s", step, time.monotonic() - t0, last)
    return last
