"""The control space of a trained auto-encoder: latent dimensions, or their PCA, as macro controls.

A point of the control space is a vector ``c`` in units of standard deviations:

* ``axes="latent"``: c = z (the prior is N(0, I), so one unit is one prior std);
* ``axes="pca"``: c_k = <z - mean, e_k> / s_k over the principal axes e_k of the training presets' latents
  (posterior means through the flow), s_k their std; z = mean + sum_k c_k s_k e_k (unset axes at 0, the
  mean). Needs the dataset.

Shared by ``acids-flowsynth macros`` and ``serve`` (``/decode``, ``/z_pos``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from acids_core.errors import UsageError
from acids_flowsynth.model import FlowSynth


class ControlSpace:
    def __init__(
        self, model: FlowSynth, mean: torch.Tensor, axes: torch.Tensor, scale: torch.Tensor, kind: str
    ):
        self.model, self.mean, self.axes, self.scale, self.kind = model, mean, axes, scale, kind

    @property
    def dim(self) -> int:
        return int(self.axes.shape[0])

    @classmethod
    def latent(cls, model: FlowSynth) -> ControlSpace:
        if not model.is_ae:
            raise UsageError(f"a {model.kind} model has no latent space (train an ae/vae/vae_flow/flow_reg)")
        d = model.latent
        return cls(model, torch.zeros(d), torch.eye(d), torch.ones(d), "latent")

    @classmethod
    def pca(cls, model: FlowSynth, data: str | os.PathLike[str] | Mapping[str, Any]) -> ControlSpace:
        """Principal axes of the training split's latents (``data``: the model's dataset)."""
        from acids_flowsynth.data import load

        if not model.is_ae:
            raise UsageError(f"a {model.kind} model has no latent space (train an ae/vae/vae_flow/flow_reg)")
        mel, _ = load(data).part("train")
        with torch.no_grad():
            z = torch.cat(
                [
                    model.encode(model.prepare(torch.from_numpy(mel[i : i + 256])))["z"]
                    for i in range(0, len(mel), 256)
                ]
            )
        mean = z.mean(0)
        _, s, vh = torch.linalg.svd(z - mean, full_matrices=False)
        scale = (s / max(len(z) - 1, 1) ** 0.5).clamp(min=1e-6)
        # a sign convention: the largest loading of each axis is positive (stable across runs)
        sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True))).squeeze(1)
        return cls(model, mean, vh * sign[:, None], scale, "pca")

    def to_z(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, k) coordinates of the first k axes (k <= dim; the others at 0) → latent (B, D)."""
        k = coords.shape[-1]
        if k > self.dim:
            raise UsageError(f"{k} coordinates for a {self.dim}-dimensional control space")
        return self.mean + (coords.float() * self.scale[:k]) @ self.axes[:k]

    def of_z(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, D) → coordinates (B, dim)."""
        return ((z - self.mean) @ self.axes.T) / self.scale

    @torch.no_grad()
    def params(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates → normalised parameters (B, P) through the model's regressor."""
        return self.model.regress(self.to_z(coords))

    @torch.no_grad()
    def encode(self, mel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Natural-log mel (n_mels, F) → (coordinates (dim,), normalised parameters (P,))."""
        m = self.model
        z = m.encode(m.prepare(torch.from_numpy(mel)[None]))["z"]
        return self.of_z(z)[0], m.regress(z)[0]
