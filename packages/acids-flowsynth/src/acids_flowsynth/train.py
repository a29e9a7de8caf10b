"""Training with the paper's schedule, and the test-set evaluation (MSE_n, re-rendered mel SC and MSE).

The only module that imports optimizers (and TensorBoard, optionally). Single process, epoch based:

* loss = mean(recon + beta(e) KL) + gamma(e) mean(param MSE) for auto-encoders (MMD instead of KL for
  ``wae``), param MSE alone for the baselines;
* beta(e) = beta * min(1, e / warm_latent); gamma(e) = 0 before ``start_regress``, then a linear warm-up
  over ``warm_regress`` epochs to ``reg_factor`` (x ``flow_reg_scale`` for the regression flow);
* Adam; ReduceLROnPlateau on the validation loss; early stopping. Both count only epochs after every
  warm-up, since the loss changes meaning while beta and gamma ramp up;
* ``last.ckpt`` after every epoch (resume continues from it: weights, optimizer, schedule, counters, RNG),
  ``best.ckpt`` at each validation improvement (after the warm-ups; before them every epoch is "best").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acids_core.atomic import atomic_write_json
from acids_core.config import to_toml
from acids_core.errors import DataError
from acids_core.log import Progress, get_logger
from acids_flowsynth import checkpoint, losses
from acids_flowsynth.config import FlowSynthConfig, with_params
from acids_flowsynth.data import SynthData
from acids_flowsynth.data import load as load_data
from acids_flowsynth.model import FlowSynth

log = get_logger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


def weights_at(cfg: FlowSynthConfig, epoch: int) -> tuple[float, float]:
    """(beta, gamma) at ``epoch`` (0-based)."""
    t = cfg.train
    if not cfg.is_ae:
        return 0.0, 1.0
    beta = t.beta * min(1.0, epoch / t.warm_latent) if t.warm_latent > 0 else t.beta
    if epoch < t.start_regress:
        gamma = 0.0
    else:
        ramp = min(1.0, (epoch - t.start_regress + 1) / t.warm_regress) if t.warm_regress > 0 else 1.0
        gamma = t.reg_factor * ramp
    if cfg.model.kind == "flow_reg":
        gamma *= t.flow_reg_scale
    return beta, gamma


def warm_epochs(cfg: FlowSynthConfig) -> int:
    """Epochs before the loss is stationary (plateau and early stopping start counting after them)."""
    t = cfg.train
    if not cfg.is_ae:
        return 0
    return max(t.warm_latent, t.start_regress + t.warm_regress)


def batch_loss(
    model: FlowSynth, x: torch.Tensor, v: torch.Tensor, beta: float, gamma: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch (prepared input ``x``, target parameters ``v``) and its terms."""
    out = model(x)
    reg = losses.regression_loss(out["params"], v).mean()
    if not model.is_ae:
        return reg, {"reg": float(reg.detach())}
    recon = losses.recon_loss(out["recon"], x).mean()
    if model.kind == "wae":
        latent = 100.0 * losses.mmd(out["z"])
    else:
        latent = out["kl"].mean()
    loss = recon + beta * latent + gamma * reg
    return loss, {
        "recon": float(recon.detach()),
        "latent": float(latent.detach()),
        "reg": float(reg.detach()),
    }


def meta_of(data: SynthData) -> dict[str, Any]:
    """What a checkpoint needs to map predictions back to a synth preset."""
    base = np.median(data.params, axis=0)  # the non-subset columns are constant (their defaults)
    return {
        "synth": data.config.get("synth"),
        "names": list(data.names),
        "subset": data.subset_names,
        "subset_indices": list(data.subset),
        "base": [float(b) for b in base],
        "render": {
            k: data.config[k]
            for k in ("note", "velocity", "hold", "duration", "sample_rate")
            if k in data.config
        },
    }


def _evaluate(model: FlowSynth, x: torch.Tensor, v: torch.Tensor, beta: float, gamma: float, bs: int):
    model.eval()
    total, reg, n = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            loss, terms = batch_loss(model, x[i : i + bs], v[i : i + bs], beta, gamma)
            m = len(x[i : i + bs])
            total += float(loss) * m
            reg += terms["reg"] * m
            n += m
    return total / max(n, 1), reg / max(n, 1)


def train(
    cfg: FlowSynthConfig,
    data: str | Path | Mapping[str, Any] | SynthData,
    out_dir: str | Path,
    *,
    resume: bool = True,
    tensorboard: bool = True,
    epochs: int | None = None,
    evaluate_audio: bool = True,
) -> Path:
    """Train on a synth dataset; return the best checkpoint. Writes ``metrics.json`` (test set) at the end."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_data(data)
    cfg = with_params(cfg, len(ds.subset))
    total = epochs if epochs is not None else cfg.train.epochs
    t = cfg.train
    mel_tr, v_tr = ds.part("train")
    mel_va, v_va = ds.part("valid")
    if len(mel_tr) < 2:
        raise DataError(f"{ds.root}: {len(mel_tr)} training presets; render more (--presets)")
    if len(mel_va) == 0:
        log.warning("%s has no validation presets: monitoring the training set", ds.root)
        mel_va, v_va = mel_tr, v_tr

    model = FlowSynth(cfg)
    meta = meta_of(ds)
    with torch.no_grad():
        raw = torch.log(torch.exp(torch.from_numpy(mel_tr[..., : cfg.input.n_frames])) + cfg.input.eps)
        model.set_stats(float(raw.mean()), float(raw.std()))
        x_tr = model.prepare(torch.from_numpy(mel_tr))
        x_va = model.prepare(torch.from_numpy(mel_va))
    y_tr, y_va = torch.from_numpy(v_tr), torch.from_numpy(v_va)

    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=t.plateau_factor, patience=t.plateau_patience
    )
    epoch, best, bad = 0, math.inf, 0
    history: list[dict[str, float]] = []
    gen = torch.Generator().manual_seed(t.seed)  # batch order and input noise
    torch.manual_seed(t.seed)  # the VAE's posterior samples and dropout (global RNG, restored on resume)
    last = out / LAST
    if resume and last.exists():
        env = checkpoint.read(last)
        if checkpoint.config_of(env) != cfg:
            raise DataError(f"{last} was trained with another config; use a new run directory or --no-resume")
        p = env["payload"]
        model.load_state_dict(p["model"])
        opt.load_state_dict(p["optimizer"])
        sched.load_state_dict(p["scheduler"])
        epoch, best, bad = int(p["epoch"]), float(p["best"]), int(p["bad_epochs"])
        history = list(p["history"])
        gen.set_state(p["rng"])
        torch.set_rng_state(p["torch_rng"])
        log.info("resumed %s at epoch %d", last, epoch)
    (out / "config.toml").write_text(to_toml(cfg))

    writer = None
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:
            log.warning(
                "tensorboard is not installed (pip install acids-flowsynth[train]): no TensorBoard logs"
            )

    def save(path: Path) -> None:
        checkpoint.save(
            model,
            path,
            meta,
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            epoch=epoch,
            best=best,
            bad_epochs=bad,
            history=history,
            rng=gen.get_state(),
            torch_rng=torch.get_rng_state(),
        )

    warm = warm_epochs(cfg)
    t0 = time.monotonic()
    n = len(x_tr)
    bs = min(t.batch_size, n)
    with Progress(total=total, desc="train", unit="epochs", initial=epoch) as bar:
        while epoch < total and (epoch < warm or bad < t.early_stop):
            beta, gamma = weights_at(cfg, epoch)
            model.train()
            order = torch.randperm(n, generator=gen)
            run, seen = 0.0, 0
            for i in range(0, n - bs + 1, bs):  # whole batches only (batch norm)
                idx = order[i : i + bs]
                x = x_tr[idx]
                if t.noise > 0:
                    hit = (torch.rand(len(idx), 1, 1, 1, generator=gen) < t.noise_prob).float()
                    x = x + hit * t.noise * torch.randn(x.shape, generator=gen)
                loss, _ = batch_loss(model, x, y_tr[idx], beta, gamma)
                if not torch.isfinite(loss):
                    raise DataError(
                        f"loss is {float(loss)} at epoch {epoch}: lower train.lr or check the data"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
                run += float(loss.detach()) * len(idx)
                seen += len(idx)
            val, val_reg = _evaluate(model, x_va, y_va, beta, gamma, bs)
            epoch += 1
            improved = val < best
            if epoch > warm:
                sched.step(val)
                if improved:
                    best, bad = val, 0
                else:
                    bad += 1
            else:
                best, improved = val, True
            history.append({"epoch": epoch, "train": run / max(seen, 1), "valid": val, "valid_reg": val_reg})
            bar.update(1, loss=f"{run / max(seen, 1):.4g}", val_reg=f"{val_reg:.4f}")
            if writer is not None:
                writer.add_scalar("loss/train", run / max(seen, 1), epoch)
                writer.add_scalar("loss/valid", val, epoch)
                writer.add_scalar("mse/valid_params", val_reg, epoch)
                writer.add_scalar("lr", opt.param_groups[0]["lr"], epoch)
            if improved:
                save(out / BEST)
            save(last)
    if writer is not None:
        writer.close()
    log.info("trained %d epochs in %.0f s", epoch, time.monotonic() - t0)
    best_model, _ = checkpoint.load(out / BEST)
    metrics = evaluate(best_model, ds, meta, audio=evaluate_audio)
    metrics["epochs"] = epoch
    metrics["history"] = history
    atomic_write_json(out / "metrics.json", metrics)
    return out / BEST


def evaluate(
    model: FlowSynth, ds: SynthData, meta: Mapping[str, Any], *, split: str = "test", audio: bool = True
) -> dict[str, Any]:
    """The paper's metrics on a split: MSE_n of the parameters, and (``audio``) SC and MSE between the
    mel of the dataset and that of the audio re-rendered from the predicted parameters (log(mel + 1e-3),
    64 x 80, not standardised). Each as mean and std over the split's presets."""
    mel, v = ds.part(split)
    if len(mel) == 0:
        return {"split": split, "n": 0}
    pred = model.infer(torch.from_numpy(mel))
    v_t = torch.from_numpy(v)
    out: dict[str, Any] = {"split": split, "n": len(mel)}

    def stat(x: torch.Tensor) -> dict[str, float]:
        return {"mean": float(x.mean()), "std": float(x.std()) if len(x) > 1 else 0.0}

    out["mse_n"] = stat(losses.mse_n(pred, v_t))
    out["mse"] = stat(losses.regression_loss(pred, v_t))
    if audio and meta.get("synth"):
        re_mel = rerender_mel(pred, meta)
        nf, eps = model.cfg.input.n_frames, model.cfg.input.eps
        a = torch.log(torch.exp(torch.from_numpy(mel[..., :nf])) + eps)
        b = torch.log(torch.exp(torch.from_numpy(re_mel[..., :nf])) + eps)
        out["sc"] = stat(losses.spectral_convergence(b, a))
        out["mel_mse"] = stat(losses.spectral_mse(b, a))
    return out


def full_vectors(pred: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """Subset predictions (B, S) → full normalised vectors (B, P) with the other parameters at ``base``."""
    base = torch.tensor(meta["base"], dtype=torch.float32).expand(pred.shape[0], -1).clone()
    base[:, meta["subset_indices"]] = pred.float()
    return base


def rerender_mel(pred: torch.Tensor, meta: Mapping[str, Any], batch: int = 16) -> np.ndarray:
    """Render predicted presets with the dataset's synth and settings; their natural-log mel (B, 64, F)."""
    from acids_flowsynth.render import mel_of
    from acids_flowsynth.synth import get_backend

    backend = get_backend(meta["synth"])
    r = dict(meta.get("render", {}))
    sr = int(r.get("sample_rate", 22050))
    vectors = full_vectors(pred, meta)
    mels = []
    with torch.inference_mode():
        for i in range(0, len(vectors), batch):
            audio = backend.render(
                vectors[i : i + batch],
                note=r.get("note", 60),
                velocity=r.get("velocity", 100),
                hold=r.get("hold", 3.0),
                duration=r.get("duration", 4.0),
                sample_rate=sr,
            ).numpy()
            mels += [mel_of(a, sr) for a in audio]  # as render.py: the float render, before int16
    return np.stack(mels).astype(np.float32)


def metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of ``metrics.json`` without the history (for the emitted record)."""
    return json.loads(json.dumps({k: v for k, v in metrics.items() if k != "history"}))
