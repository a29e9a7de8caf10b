"""Scriptable streaming wrapper for nn~ (TorchScript) and the ``acids.exportables`` entry point.

nn~ method ``forward``: 2 input channels (f0 in Hz, loudness in dB) at ``in_ratio = hop`` (nn~ hands one
value per hop: the last sample of each hop, reference/nntilde.md §1.3), 1 output channel at ratio 1. The
wrapped model streams: oscillator phase, GRU state, noise-filter tails and reverb tail carry over calls.

The autoencoder variant adds ``encode`` (1 audio channel at ratio 1 → ``z_dim`` channels at ratio ``hop``)
and ``decode`` (f0, loudness and the ``z_dim`` latent channels at ratio ``hop`` → audio); its ``forward``
decodes with the training set's mean z. ``encode`` streams with the encoder's state (audio history, GRU),
``decode`` and ``forward`` with the decoder's and synths' (one of the two per nn~ object).
"""

import os
from typing import Any

import torch
from torch import nn

from acids_ddsp.model import DDSP


class ScriptedDDSP(nn.Module):
    """A DDSP model behind the nn~ method interface (one Tensor in, one Tensor out).

    ``streaming=True`` (the default, what nn~ needs): state carries over calls; its buffers are reassigned,
    never mutated in place, and zero-filled buffers of the materialised shapes equal a fresh stream (the
    acids-export contract, so ONNX can take the state as explicit inputs/outputs).
    """

    streaming: bool

    def __init__(self, model: DDSP, streaming: bool = True, precision: str = "fp32") -> None:
        super().__init__()
        if precision != "fp32":  # a copy: the caller's model keeps its float32 weights
            import copy

            model = copy.deepcopy(model).eval()
            model.set_precision(precision)
        self.precision = precision
        self.model = model.eval()
        self.model.set_streaming(streaming)
        self.streaming = streaming
        self.hop = model.hop
        self.sample_rate = model.sample_rate
        self.z_dim = model.z_dim
        self.register_buffer("forward_params", torch.tensor([2, model.hop, 1, 1]), persistent=False)
        self.forward_input_labels = ["(signal) f0 in Hz", "(signal) loudness in dB"]
        self.forward_output_labels = ["(signal) audio"]
        self.methods = ["forward"]
        self.labels = {"forward": (self.forward_input_labels, self.forward_output_labels)}
        if model.has_encoder:
            z = [f"(signal) latent {i}" for i in range(model.z_dim)]
            self.register_buffer(
                "encode_params", torch.tensor([1, 1, model.z_dim, model.hop]), persistent=False
            )
            self.register_buffer(
                "decode_params", torch.tensor([2 + model.z_dim, model.hop, 1, 1]), persistent=False
            )
            self.methods = ["forward", "encode", "decode"]
            self.labels["encode"] = (["(signal) audio"], z)
            self.labels["decode"] = ([*self.forward_input_labels, *z], list(self.forward_output_labels))

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return self.methods

    @torch.jit.export
    def get_attributes(self) -> list[str]:
        return ["none"]

    @torch.jit.export
    def get_sample_rate(self) -> int:
        return self.sample_rate

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        """The acids-export description: methods, sample rate, streaming, latency (none: no look-ahead)."""
        methods = {
            m: {
                "params": [int(v) for v in getattr(self, f"{m}_params")],
                "input_labels": list(self.labels[m][0]),
                "output_labels": list(self.labels[m][1]),
            }
            for m in self.methods
        }
        spec: dict[str, Any] = {
            "methods": methods,
            "sample_rate": self.sample_rate,
            "streaming": self.streaming,
            "latency_samples": 0,
            "precision": self.precision,
        }
        return spec

    @torch.jit.ignore
    def example_inputs(self, audio: Any, sample_rate: int) -> dict[str, torch.Tensor]:
        """Inputs of every method from mono float32 ``audio`` at the model's rate (acids-export ``check``):
        acids-data f0/loudness frames, the audio, and (``decode``) its z from a fresh offline encoder."""
        import copy

        import numpy as np

        from acids_data.features import compute_features

        if sample_rate != self.sample_rate:
            raise ValueError(f"audio at {sample_rate} Hz, the model runs at {self.sample_rate} Hz")
        x = np.ascontiguousarray(audio, dtype=np.float32)
        n = len(x) // self.hop
        x = x[: n * self.hop]
        feats = compute_features(x[None], self.sample_rate, self.hop, ["loudness", "f0"])
        controls = torch.from_numpy(np.stack([feats["f0"][:n], feats["loudness"][:n]]).astype(np.float32))[
            None
        ]
        out = {"forward": controls}
        if self.z_dim:
            offline = copy.deepcopy(self.model)
            offline.set_streaming(False)
            signal = torch.from_numpy(x)[None, None]
            with torch.no_grad():
                z = offline.encode(signal).transpose(1, 2)
            out["encode"] = signal
            out["decode"] = torch.cat([controls, z], dim=1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, 2, F): f0 (Hz) and loudness (dB) frames. Returns: (B, 1, F * hop) audio."""
        return self.model(x[:, 0], x[:, 1])

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, 1, T) audio, T a multiple of the hop. Returns: (B, z_dim, T // hop) latent frames."""
        return self.model.encode(x).transpose(1, 2)

    @torch.jit.export
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, 2 + z_dim, F): f0 (Hz), loudness (dB) and z frames. Returns: (B, 1, F * hop) audio."""
        return self.model.decode(x[:, 0], x[:, 1], x[:, 2:].transpose(1, 2))


def script(module: ScriptedDDSP) -> torch.jit.ScriptModule:
    """``torch.jit.script`` with torch 2.13's TorchScript deprecation warnings silenced (nn~ needs it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


def exportable(
    source: str | os.PathLike[str] | DDSP, *, streaming: bool = True, precision: str = "fp32"
) -> ScriptedDDSP:
    """Entry point of ``acids.exportables`` (name ``ddsp``): a checkpoint path (or model) → scriptable module.

    ``torch.jit.script(exportable(path))`` is the nn~ TorchScript file; ``io_spec()`` describes it.
    ``precision="bf16"`` keeps the decoder's (and encoder's) weights in bfloat16 (:meth:`DDSP.set_precision`):
    for TorchScript/nn~ on CPUs with bfloat16 arithmetic, not for ONNX board profiles. ``precision="int8"``
    keeps them in int8 (per-channel weight scales, inputs quantized per frame, ``torch._int_mm``): the
    stream still equals the int8 model offline; TorchScript/nn~ only, not ONNX.
    """
    if isinstance(source, DDSP):
        return ScriptedDDSP(source, streaming=streaming, precision=precision)
    from acids_ddsp import checkpoint

    return ScriptedDDSP(checkpoint.load(source), streaming=streaming, precision=precision)
