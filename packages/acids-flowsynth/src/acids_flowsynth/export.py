"""The ``acids.exportables`` entry point: the encoder (mel → latent) and the latent → parameters mapping.

nn~-style methods on a scriptable module:

* ``encode``: (B, n_mels, F) natural-log mel → (B, D) latent (the posterior mean through the IAF);
* ``regress``: (B, D) latent → (B, P) normalised parameters;
* ``forward``: mel → parameters (both).

These are frame-less (one 4 s note in, one vector out), not audio-rate streams, so ``io_spec`` reports
them as whole-input methods (ratio = input frames) for acids-export's registry.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from acids_flowsynth.flows import FlowSequence
from acids_flowsynth.model import FlowSynth


class _Prepare(nn.Module):
    """Natural-log mel (B, n_mels, F) → the model's standardised input (B, 1, n_mels, n_frames)."""

    def __init__(self, model: FlowSynth) -> None:
        super().__init__()
        self.n_frames = int(model.cfg.input.n_frames)
        self.eps = float(model.cfg.input.eps)
        self.floor = math.log(1e-10)
        self.register_buffer("mean", model.mean.detach().clone())
        self.register_buffer("std", model.std.detach().clone())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        n = self.n_frames
        # pad n silent frames, then keep the first n: no branch on the length, so a traced graph handles
        # inputs shorter and longer than the one it was traced with
        mel = nn.functional.pad(mel, (0, n), value=self.floor)[..., :n]
        x = torch.log(torch.exp(mel.float()) + self.eps)
        return ((x - self.mean) / self.std).unsqueeze(1)


class _Sigmoid(nn.Module):
    """A direct regressor (baselines, MLP regressor) with its sigmoid output."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


class _FlowSigmoid(nn.Module):
    """The regression flow (``flow_reg``) with its sigmoid output."""

    def __init__(self, flow: FlowSequence) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u, _ = self.flow(z)
        return torch.sigmoid(u)


class _Encoder(nn.Module):
    """Prepared input → latent: the posterior mean, through the IAF posterior when there is one."""

    def __init__(self, encoder: nn.Module, posterior: FlowSequence | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.posterior = posterior if posterior is not None else FlowSequence([])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encoder(x).chunk(2, dim=-1)
        z, _ = self.posterior(mu)
        return z


class ExportedFlowSynth(nn.Module):
    """A trained FlowSynth model with its parameter names, rebuilt from its pieces (shared weights) so that
    ``torch.jit.script``, ``torch.jit.trace`` and ``torch.export`` see one branch-free graph per kind.

    Baselines (``mlp``, ``cnn``) have ``forward`` only; ``encode`` and ``regress`` raise for them."""

    def __init__(self, model: FlowSynth, names: list[str], sample_rate: int = 22050) -> None:
        super().__init__()
        model = model.eval()
        self.sample_rate = int(sample_rate)
        self.names = list(names)
        self.kind = model.kind
        self.n_frames = model.cfg.input.n_frames
        self.n_mels = model.cfg.input.n_mels
        self.latent = int(model.latent)
        self.n_params = int(model.n_params)
        self.is_ae = bool(model.is_ae)
        self.prepare = _Prepare(model)
        if model.is_ae:
            assert model.encoder is not None
            self.encoder = _Encoder(model.encoder, model.posterior)
            reg = model.regressor
            self.head = _FlowSigmoid(reg) if isinstance(reg, FlowSequence) else _Sigmoid(reg)
        else:
            self.encoder = _Encoder(nn.Identity(), None)  # unused: keeps the attributes' types fixed
            self.head = _Sigmoid(model.regressor)
        self.eval()

    @torch.jit.export
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        if not self.is_ae:
            raise RuntimeError("this model has no latent space")
        return self.encoder(self.prepare(mel))

    @torch.jit.export
    def regress(self, z: torch.Tensor) -> torch.Tensor:
        if not self.is_ae:
            raise RuntimeError("this model has no latent space")
        return self.head(z)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.prepare(mel)
        if self.is_ae:
            return self.head(self.encoder(x))
        return self.head(x)

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        d, p = self.latent, self.n_params
        methods = {"forward": {"params": [self.n_mels, self.n_frames, p, self.n_frames]}}
        if self.is_ae:
            methods["encode"] = {"params": [self.n_mels, self.n_frames, d, self.n_frames]}
            methods["regress"] = {"params": [d, 1, p, 1]}
        return {
            "methods": methods,
            "parameter_names": self.names,
            "sample_rate": self.sample_rate,
            "streaming": False,
            "latency_samples": 0,
        }


def exportable(source: str | os.PathLike[str] | FlowSynth, **_: Any) -> ExportedFlowSynth:
    """Entry point of ``acids.exportables`` (name ``flowsynth``): a checkpoint path (or model) → module."""
    if isinstance(source, FlowSynth):
        return ExportedFlowSynth(source, [f"p{i}" for i in range(source.n_params)])
    from acids_flowsynth import checkpoint

    model, meta = checkpoint.load(source)
    sr = int(meta.get("render", {}).get("sample_rate", 22050))
    return ExportedFlowSynth(model, list(meta.get("subset", [])), sample_rate=sr)
