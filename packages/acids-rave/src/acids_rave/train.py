"""Two-phase RAVE training (the only module that imports optimizers).

Phase 1 (steps < ``phase1_steps``): VAE with the multi-scale spectral distance (multiband + fullband)
and a KL term whose weight warms up log-linearly. Phase 2: the encoder is frozen, the noise branch is
switched on, and the decoder is trained adversarially (hinge + feature matching, weight applied once)
against the discriminator, whose own step sees a detached reconstruction (no gradient into the decoder).

The fullband target is the PQMF reconstruction of the input (the input delayed by the causal PQMF's
latency), so causal models are not asked to predict the future.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from acids_rave import checkpoint
from acids_rave.config import RaveConfig
from acids_rave.discriminator import Discriminator
from acids_rave.losses import feature_matching, hinge_discriminator, hinge_generator, spectral_distance
from acids_rave.model import Rave, kl_divergence


def beta_at(cfg: RaveConfig, step: int) -> float:
    """KL weight at ``step``: log-linear from ``beta_start`` to ``beta`` over ``beta_warmup_steps``."""
    lc = cfg.loss
    if lc.beta_warmup_steps <= 0 or step >= lc.beta_warmup_steps:
        return lc.beta
    a = step / lc.beta_warmup_steps
    return math.exp((1 - a) * math.log(lc.beta_start) + a * math.log(lc.beta))


@dataclass
class TrainState:
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Holds the model, discriminator and optimizers of one run; :meth:`step` takes one batch (B, C, T)."""

    def __init__(self, cfg: RaveConfig, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.train.seed)
        self.model = Rave(cfg).to(self.device)
        self.discriminator = Discriminator(cfg.discriminator, cfg.channels).to(self.device)
        t = cfg.train
        gen_params = list(self.model.encoder.parameters()) + list(self.model.decoder.parameters())
        self.opt_g = torch.optim.Adam(gen_params, lr=t.lr, betas=t.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr, betas=t.betas)
        self.state = TrainState()

    @property
    def phase(self) -> int:
        return 1 if self.state.step < self.cfg.train.phase1_steps else 2

    def _enter_phase(self) -> None:
        if self.phase == 2:
            self.model.encoder.eval()  # frozen, BatchNorm statistics included
            self.model.encoder.requires_grad_(False)
            self.model.decoder.noise_gain.fill_(1.0)

    def _reconstruct(self, x: torch.Tensor, frozen_encoder: bool) -> dict[str, torch.Tensor]:
        m = self.model
        with torch.set_grad_enabled(not frozen_encoder):
            mean, std = m.posterior(x)
            z = mean + std * torch.randn_like(std)
        x_bands = m.pqmf(x)
        y_bands = m.decode_bands(z)
        return {
            "mean": mean,
            "std": std,
            "x_bands": x_bands,
            "y_bands": y_bands,
            "x": m.pqmf.inverse(x_bands),
            "y": m.pqmf.inverse(y_bands),
        }

    def _spectral(self, r: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lc = self.cfg.loss
        mb = spectral_distance(r["x_bands"], r["y_bands"], lc.multiband_scales, lc.log_epsilon)
        fb = spectral_distance(r["x"], r["y"], lc.scales, lc.log_epsilon)
        return mb, fb

    def step(self, x: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a batch (B, C, T); returns the logged losses."""
        x = x.to(self.device)
        cfg, t = self.cfg, self.cfg.train
        self.model.train()
        self._enter_phase()
        phase = self.phase
        logs: dict[str, float] = {"phase": float(phase)}
        r = self._reconstruct(x, frozen_encoder=phase == 2)
        mb, fb = self._spectral(r)
        loss = mb + fb
        if phase == 1:
            kl = kl_divergence(r["mean"], r["std"])
            beta = beta_at(cfg, self.state.step)
            loss = loss + beta * kl
            logs.update(kl=kl.item(), beta=beta)
        else:
            if (self.state.step - t.phase1_steps) % t.update_discriminator_every == 0:
                d_real = self.discriminator(r["x"])
                d_fake = self.discriminator(r["y"].detach())
                loss_d = sum(hinge_discriminator(a[-1], b[-1]) for a, b in zip(d_real, d_fake, strict=True))
                self.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d.step()
                logs["discriminator"] = loss_d.item()
            self.discriminator.requires_grad_(False)
            with torch.no_grad():
                f_real = self.discriminator(r["x"])
            f_fake = self.discriminator(r["y"])
            self.discriminator.requires_grad_(True)
            adv = sum(hinge_generator(f[-1]) for f in f_fake)
            fm = sum(
                feature_matching(a, b, cfg.loss.relative_feature_matching)
                for a, b in zip(f_real, f_fake, strict=True)
            )
            loss = loss + cfg.loss.adversarial * adv + cfg.loss.feature_matching * fm
            logs.update(adversarial=adv.item(), feature_matching=fm.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.opt_g.step()
        logs.update(loss=loss.item(), multiband=mb.item(), fullband=fb.item())
        self.state.step += 1
        return logs

    @torch.no_grad()
    def validate(self, batches: Iterable[torch.Tensor]) -> float:
        """Mean fullband spectral distance of posterior-mean reconstructions over ``batches``."""
        self.model.eval()
        total, n = 0.0, 0
        for x in batches:
            x = x.to(self.device)
            x_ref = self.model.pqmf.inverse(self.model.pqmf(x))
            y = self.model.pqmf.inverse(self.model.decode_bands(self.model.posterior(x)[0]))
            total += float(spectral_distance(x_ref, y, self.cfg.loss.scales, self.cfg.loss.log_epsilon))
            n += 1
        return total / max(n, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, reconstruction) of a batch with the posterior mean, both (B, C, T)."""
        self.model.eval()
        x = x.to(self.device)
        x_ref = self.model.pqmf.inverse(self.model.pqmf(x))
        return x_ref, self.model.pqmf.inverse(self.model.decode_bands(self.model.posterior(x)[0]))

    @torch.no_grad()
    def analyse_latent(self, batches: Iterable[torch.Tensor], fidelity: float = 0.95) -> int:
        """PCA of the posterior means over ``batches``; returns the dims kept at ``fidelity``."""
        self.model.eval()
        means = []
        for x in batches:
            m = self.model.posterior(x.to(self.device))[0]  # (B, latent, F)
            means.append(m.transpose(1, 2).reshape(-1, m.shape[1]).cpu())
        return self.model.fit_latent_pca(torch.cat(means), fidelity)

    # --- checkpoints --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return checkpoint.save(
            path,
            self.model,
            step=self.state.step,
            phase=self.phase,
            discriminator=self.discriminator.state_dict(),
            optimizers={"generator": self.opt_g.state_dict(), "discriminator": self.opt_d.state_dict()},
            train_state={"history": self.state.history, "rng": torch.get_rng_state()},
        )

    @classmethod
    def resume(cls, path: str | Path, device: str | torch.device = "cpu") -> Trainer:
        """Rebuild a trainer exactly as it was saved (weights, optimizers, step, RNG)."""
        model, env = checkpoint.load(path)
        p = env["payload"]
        if "optimizers" not in p:
            raise ValueError(f"{path} is not a resumable training checkpoint (no optimizer state)")
        trainer = cls(model.config, device)
        trainer.model.load_state_dict(p["model"])
        trainer.discriminator.load_state_dict(p["discriminator"])
        trainer.opt_g.load_state_dict(p["optimizers"]["generator"])
        trainer.opt_d.load_state_dict(p["optimizers"]["discriminator"])
        trainer.state = TrainState(step=int(p["step"]), history=list(p["train_state"]["history"]))
        torch.set_rng_state(p["train_state"]["rng"])
        return trainer


def save_spectrograms(path: str | Path, x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> Path | None:
    """PNG of log spectrograms, input (top) vs reconstruction (bottom), of the first channel of (C, T).

    Returns None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from acids_rave.losses import stft_magnitude

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, sig, title in zip(axes, (x, y), ("input", "reconstruction"), strict=True):
        mag = stft_magnitude(sig[:1].unsqueeze(0).float().cpu(), 1024)[0]
        ax.imshow(
            20 * torch.log10(mag + 1e-5).numpy(),
            origin="lower",
            aspect="auto",
            vmin=-100,
            vmax=20,
            extent=(0, sig.shape[-1] / sample_rate, 0, sample_rate / 2000),
        )
        ax.set_title(title)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def batches_forever(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Cycle over a re-iterable source of batches (a DataLoader, a list)."""
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("the training data is empty")


def fit(
    trainer: Trainer,
    train_batches: Iterable[torch.Tensor],
    max_steps: int,
    valid_batches: Iterable[torch.Tensor] | None = None,
    val_every: int | None = None,
    on_log: Any = None,
) -> list[dict[str, float]]:
    """Run ``trainer`` up to ``max_steps`` total steps; returns (and stores) the per-step logs."""
    it = batches_forever(train_batches)
    val_every = val_every or trainer.cfg.train.val_every
    while trainer.state.step < max_steps:
        t0 = time.perf_counter()
        logs = trainer.step(next(it))
        logs["step"] = float(trainer.state.step)
        logs["steps_per_s"] = 1.0 / max(time.perf_counter() - t0, 1e-9)
        if valid_batches is not None and trainer.state.step % val_every == 0:
            logs["validation"] = trainer.validate(valid_batches)
        trainer.state.history.append(logs)
        if on_log is not None:
            on_log(logs)
    return trainer.state.history
