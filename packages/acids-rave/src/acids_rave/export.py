"""Scriptable wrapper of a trained RAVE with the nn~ interface, and the ``acids.exportables`` hook.

:class:`ScriptedRave` exposes ``encode``, ``decode`` and ``forward`` (one tensor in, one out), each with
its ``<method>_params`` buffer ``[in_channels, in_ratio, out_channels, out_ratio]``, plus
``get_methods``/``get_attributes``/``get_sample_rate`` — what the nn~ external reads from a TorchScript
file. The model inside is a deep copy with weight normalisation folded; with ``streaming=True`` (the
default) its convolutions keep their state between calls, so each call takes the next block of a stream
(any multiple of the compression ratio). The latent is the ``latent_dims`` PCA channels chosen at the
latent analysis (or at ``fidelity``): ``decode`` fills the dropped ones with their mean, never noise.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from acids_rave.model import Rave
from acids_rave.prior import LatentPrior, StreamingSampler


class ScriptedRave(nn.Module):
    """nn~-compatible wrapper; see the module docstring."""

    def __init__(
        self, model: Rave, streaming: bool = True, fidelity: float | None = None, precision: str = "fp32"
    ):
        super().__init__()
        model = copy.deepcopy(model).eval()
        if fidelity is not None:
            model.set_fidelity(fidelity)
        model.fuse()
        model.set_precision(precision)
        self.precision = precision
        for p in model.parameters():
            p.requires_grad_(False)
        if streaming:
            model.set_streaming(True)
        self.model = model
        self.streaming = streaming
        self.sr = model.sample_rate
        ch, ratio, dims = model.channels, model.compression_ratio, model.n_latent
        self.latent_dims = dims
        self.register_buffer("encode_params", torch.tensor([ch, 1, dims, ratio]))
        self.register_buffer("decode_params", torch.tensor([dims, ratio, ch, 1]))
        self.register_buffer("forward_params", torch.tensor([ch, 1, ch, 1]))
        self.methods = ["encode", "decode", "forward"]

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return self.methods

    @torch.jit.export
    def get_attributes(self) -> list[str]:
        return []

    @torch.jit.export
    def get_sample_rate(self) -> int:
        return self.sr

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        """Per method: (in_channels, in_ratio, out_channels, out_ratio); and the model's attributes."""
        return {
            "methods": {m: [int(v) for v in getattr(self, f"{m}_params")] for m in self.methods},
            "sample_rate": self.sr,
            "streaming": self.streaming,
            "latency_samples": self.model.latency,
            "latent_dims": self.latent_dims,
            "precision": self.precision,
        }


class ScriptedRavePrior(ScriptedRave):
    """:class:`ScriptedRave` plus a ``prior`` method: generation without input, as the official export's.

    ``prior``: (B, 1, T / R) temperature, one value per latent frame -> (B, latent_dims, T / R) latent
    frames for ``decode`` (a :class:`~acids_rave.prior.StreamingSampler`; temperature 0 gives the most
    likely frames). Attribute ``seed`` (int) picks the noise sequence; setting it restarts the stream.
    """

    def __init__(
        self,
        model: Rave,
        prior: LatentPrior,
        streaming: bool = True,
        precision: str = "fp32",
    ):
        super().__init__(model, streaming=streaming, precision=precision)
        if prior.dims != self.latent_dims:
            raise ValueError(f"the prior has {prior.dims} latent dims, the model keeps {self.latent_dims}")
        prior = copy.deepcopy(prior).eval()
        for p in prior.parameters():
            p.requires_grad_(False)
        self.sampler = StreamingSampler(prior, streaming=streaming)
        ratio = self.model.compression_ratio
        self.register_buffer("prior_params", torch.tensor([1, ratio, self.latent_dims, ratio]))
        self.methods = ["encode", "decode", "forward", "prior"]

    @torch.jit.export
    def prior(self, temperature: torch.Tensor) -> torch.Tensor:
        return self.sampler(temperature)

    @torch.jit.export
    def set_seed(self, seed: int) -> None:
        self.sampler.set_seed(seed)

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        spec = super().io_spec()
        params = spec["methods"].pop("prior")
        spec["methods"]["prior"] = {
            "params": params,
            "input_labels": ["(signal) temperature (0: the most likely frames)"],
            "output_labels": [f"(signal) latent {i}" for i in range(self.latent_dims)],
        }
        spec["attributes"] = {"seed": {"default": [0]}}
        spec["prior_receptive_field"] = self.sampler.receptive_field
        return spec

    @torch.jit.ignore
    def example_inputs(self, audio: Any, sample_rate: int) -> dict[str, torch.Tensor]:
        """For acids-export ``check``: ``prior`` at temperature 1 over as many frames as the audio has."""
        frames = max(1, len(audio) // self.model.compression_ratio)
        return {"prior": torch.ones(1, 1, frames)}


def exportable(
    source: str | os.PathLike[str] | Rave,
    *,
    streaming: bool = True,
    fidelity: float | None = None,
    precision: str = "fp32",
) -> ScriptedRave:
    """Entry point of ``acids.exportables``: a checkpoint path (or model) -> a scriptable module.

    ``torch.jit.script(exportable(path))`` is the nn~ TorchScript file; ``io_spec()`` describes it.
    ``precision="bf16"`` keeps the convolution weights in bfloat16 (see :meth:`Rave.set_precision`):
    for TorchScript/nn~ on CPUs with bfloat16 arithmetic, not for ONNX board profiles.
    """
    if isinstance(source, Rave):
        model = source
    else:
        from acids_rave.checkpoint import load_model

        model = load_model(source)
    return ScriptedRave(model, streaming=streaming, fidelity=fidelity, precision=precision)


def prior_exportable(
    source: str | os.PathLike[str],
    *,
    streaming: bool = True,
    precision: str = "fp32",
) -> ScriptedRavePrior:
    """Entry point ``rave-prior`` of ``acids.exportables``: a prior checkpoint (``acids-rave train-prior``)
    -> its RAVE model with a ``prior`` method. The model is the checkpoint the prior was trained for (its
    path is in the prior's checkpoint), checked against the weights' fingerprint."""
    from acids_rave.checkpoint import load_prior_and_model

    prior, _, model, _ = load_prior_and_model(source)
    return ScriptedRavePrior(model, prior, streaming=streaming, precision=precision)


def script(module: ScriptedRave) -> torch.jit.ScriptModule:
    """``torch.jit.script`` with torch's TorchScript deprecation warnings silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)
