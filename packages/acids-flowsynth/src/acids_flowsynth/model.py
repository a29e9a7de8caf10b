"""The FlowSynth models: direct regression baselines, auto-encoders with a regressor, flow posterior and
regression flow, behind one module (:class:`FlowSynth`) chosen by ``cfg.model.kind``.

Input: the dataset's natural-log mel ``(B, n_mels, F)`` (acids-data's ``log_mel``); :meth:`FlowSynth.prepare`
crops or pads it to ``n_frames``, takes log(mel + eps) and standardises it with the training set's scalar
mean and std (buffers, set by the trainer). Output parameters are normalised to [0, 1] (sigmoid).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from acids_flowsynth.config import FlowSynthConfig
from acids_flowsynth.flows import FlowSequence, make_flow
from acids_flowsynth.vae import ConvDecoder, ConvEncoder, mlp

_LOG_2PI = math.log(2.0 * math.pi)


class FlowSynth(nn.Module):
    """One model of the paper's Table 1 (see :mod:`acids_flowsynth.config`)."""

    def __init__(self, cfg: FlowSynthConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.kind = m.kind
        self.n_params = m.n_params
        self.latent = m.latent_dim
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(m.seed)
            self._build(cfg)

    def _build(self, cfg: FlowSynthConfig) -> None:
        m, i = cfg.model, cfg.input
        self.encoder: nn.Module | None = None
        self.decoder: ConvDecoder | None = None
        self.posterior: FlowSequence | None = None
        self.regressor: nn.Module
        if m.kind == "mlp":
            self.regressor = nn.Sequential(
                nn.Flatten(), mlp(i.n_mels * i.n_frames, m.mlp_hidden, m.mlp_layers, m.n_params, m.dropout)
            )
        elif m.kind in ("cnn", "resnet"):
            enc = ConvEncoder(
                i.n_mels, i.n_frames, m.cnn_channels, m.cnn_layers, m.kernel, residual=m.kind == "resnet"
            )
            head = mlp(enc.out_features, m.cnn_hidden, m.cnn_mlp_layers, m.n_params, m.dropout)
            self.regressor = nn.Sequential(enc, head)
        else:
            conv = ConvEncoder(i.n_mels, i.n_frames, m.ae_channels, m.cnn_layers, m.kernel)
            self.encoder = nn.Sequential(
                conv,
                nn.Linear(conv.out_features, m.ae_hidden),
                nn.ELU(),
                nn.Linear(m.ae_hidden, 2 * self.latent),
            )
            self.decoder = ConvDecoder(
                self.latent, m.ae_hidden, conv.out_shape, m.cnn_layers, m.kernel, (i.n_mels, i.n_frames)
            )
            if m.kind in ("vae_flow", "flow_reg"):
                self.posterior = make_flow("iaf", self.latent, m.flow_length, m.flow_hidden, seed=m.seed)
            if m.kind == "flow_reg":
                self.regressor = make_flow("maf", self.latent, m.flow_length, m.flow_hidden, seed=m.seed)
            else:
                self.regressor = mlp(self.latent, m.reg_hidden, m.reg_layers, m.n_params)
        self._init()

    def _init(self) -> None:
        """Xavier init of the convolution and dense weights (the reference code's choice)."""
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and type(mod) in (
                nn.Conv2d,
                nn.ConvTranspose2d,
                nn.Linear,
            ):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)

    # ---- input

    def set_stats(self, mean: float, std: float) -> None:
        """The training set's scalar mean and std of log(mel + eps)."""
        self.mean.fill_(float(mean))
        self.std.fill_(max(float(std), 1e-6))

    def prepare(self, mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel (B, n_mels, F) → normalised model input (B, 1, n_mels, n_frames)."""
        n = self.cfg.input.n_frames
        if mel.shape[-1] < n:
            mel = nn.functional.pad(mel, (0, n - mel.shape[-1]), value=math.log(1e-10))
        x = torch.log(torch.exp(mel[..., :n].float()) + self.cfg.input.eps)
        return ((x - self.mean) / self.std).unsqueeze(1)

    # ---- the pieces

    @property
    def is_ae(self) -> bool:
        return self.encoder is not None

    def encode(self, x: torch.Tensor, sample: bool = False) -> dict[str, torch.Tensor]:
        """Prepared input → ``{"mu", "logvar", "z0", "z", "logdet"}`` (z after the posterior flow).

        ``sample`` draws z0 ~ q(z0|x) (VAE kinds); otherwise z0 = mu.
        """
        if self.encoder is None:
            raise ValueError(f"a {self.kind} model has no latent space")
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        logvar = logvar.clamp(-12.0, 8.0)
        eps = torch.randn_like(mu) if sample and self.kind not in ("ae", "wae") else torch.zeros_like(mu)
        z0 = mu + torch.exp(0.5 * logvar) * eps
        z, logdet = (z0, mu.new_zeros(mu.shape[0])) if self.posterior is None else self.posterior(z0)
        return {"mu": mu, "logvar": logvar, "eps": eps, "z0": z0, "z": z, "logdet": logdet}

    def regress(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, D) → normalised parameters (B, n_params)."""
        if isinstance(self.regressor, FlowSequence):
            u, _ = self.regressor(z)
            return torch.sigmoid(u)
        return torch.sigmoid(self.regressor(z))

    def latent_of(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters → the latent point the regression flow maps to them (``flow_reg`` only)."""
        if not isinstance(self.regressor, FlowSequence):
            raise ValueError(f"a {self.kind} model's regressor is not invertible")
        p = params.clamp(1e-4, 1.0 - 1e-4)
        return self.regressor.inverse(torch.log(p) - torch.log1p(-p))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → reconstructed normalised input (B, 1, n_mels, n_frames)."""
        if self.decoder is None:
            raise ValueError(f"a {self.kind} model has no decoder")
        return self.decoder(z)

    # ---- whole passes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prepared input → ``{"params"}`` (+ ``"recon"``, ``"z"``, ``"kl"`` per item for auto-encoders).

        In training mode VAE kinds sample z0; ``kl`` is analytic for ``vae`` and a one-sample estimate
        log q(z0|x) - log|det| - log p(z) for the flow posteriors. ``wae`` returns ``z`` for the MMD and a
        zero ``kl``.
        """
        if not self.is_ae:
            return {"params": torch.sigmoid(self.regressor(x))}
        e = self.encode(x, sample=self.training)
        mu, logvar, z = e["mu"], e["logvar"], e["z"]
        if self.kind == "vae":
            kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        elif self.kind in ("vae_flow", "flow_reg"):
            log_q = (-0.5 * (_LOG_2PI + logvar + e["eps"].square())).sum(-1)
            log_p = (-0.5 * (_LOG_2PI + z.square())).sum(-1)
            kl = log_q - e["logdet"] - log_p
        else:
            kl = mu.new_zeros(mu.shape[0])
        return {"params": self.regress(z), "recon": self.decode(z), "z": z, "kl": kl}

    @torch.no_grad()
    def infer(self, mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel (B, n_mels, F) → normalised parameters (B, n_params), deterministic."""
        was = self.training
        self.eval()
        try:
            return self(self.prepare(mel))["params"]
        finally:
            self.train(was)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
