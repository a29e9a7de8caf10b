"""The ``acids.exportables`` entry point: the encoder (mel → latent) and the latent → parameters mapping.

nn~-style methods on a scriptable module:

* ``encode``: (B, n_mels, F) natural-log mel → (B, D) latent (the posterior mean through the IAF);
* ``regress``: (B, D) latent → (B, P) normalised parameters;
* ``forward``: mel → parameters (both).

These are frame-less (one 4 s note in, one vector out), not audio-rate streams, so ``io_spec`` reports
them as whole-input methods (ratio = input frames) for acids-export's registry.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from acids_flowsynth.model import FlowSynth


class ExportedFlowSynth(nn.Module):
    """A trained FlowSynth model with its parameter names."""

    def __init__(self, model: FlowSynth, names: list[str]) -> None:
        super().__init__()
        self.model = model.eval()
        self.names = list(names)
        self.n_frames = model.cfg.input.n_frames
        self.n_mels = model.cfg.input.n_mels

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.encode(self.model.prepare(mel))["z"]

    def regress(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.regress(z)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model(self.model.prepare(mel))["params"]

    def io_spec(self) -> dict[str, Any]:
        d, p = self.model.latent, self.model.n_params
        methods = {"forward": {"params": [self.n_mels, self.n_frames, p, self.n_frames]}}
        if self.model.is_ae:
            methods["encode"] = {"params": [self.n_mels, self.n_frames, d, self.n_frames]}
            methods["regress"] = {"params": [d, 1, p, 1]}
        return {
            "methods": methods,
            "parameter_names": self.names,
            "streaming": False,
            "latency_samples": 0,
        }


def exportable(source: str | os.PathLike[str] | FlowSynth, **_: Any) -> ExportedFlowSynth:
    """Entry point of ``acids.exportables`` (name ``flowsynth``): a checkpoint path (or model) → module."""
    if isinstance(source, FlowSynth):
        return ExportedFlowSynth(source, [f"p{i}" for i in range(source.n_params)])
    from acids_flowsynth import checkpoint

    model, meta = checkpoint.load(source)
    return ExportedFlowSynth(model, list(meta.get("subset", [])))
