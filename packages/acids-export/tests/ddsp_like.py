"""A tiny DDSP-like exportable: f0 (Hz) and loudness (dB) frames in, a streaming harmonic synth out.

``forward``: ``(B, 2, F)`` at ``in_ratio = HOP`` -> ``(B, 1, F * HOP)`` audio. A small GRU maps the scaled
controls to harmonic amplitudes; the oscillator phase and the GRU state are streaming state in reassigned
buffers (the acids-export contract). ``declare`` picks how the exportable says what its inputs are:
``"inputs"`` (io spec ``inputs``), ``"labels"`` (only channel labels, acids-ddsp's way today), ``"hook"``
(an ``example_inputs`` method) or ``"none"`` (neither: check falls back to noise).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from acids_core.checkpoint import make_envelope, save_checkpoint
from acids_export import registry

HOP = 64
SR = 16000
HARMONICS = 6


class DDSPLike(nn.Module):
    def __init__(self, streaming: bool = True, declare: str = "inputs"):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(2, 8, batch_first=True)
        self.out = nn.Linear(8, HARMONICS)
        self.streaming = streaming
        self.declare = declare
        self.hop = HOP
        self.sr = SR
        self.register_buffer("phase", torch.zeros(0), persistent=False)
        self.register_buffer("hidden", torch.zeros(0), persistent=False)
        self.register_buffer("harmonics", torch.arange(1, HARMONICS + 1, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0, loud = x[:, 0], x[:, 1]
        b = f0.shape[0]
        controls = torch.stack(
            [torch.log2(f0.clamp(20.0, 8000.0) / 20.0) / 9.0, loud.clamp(-120.0, 0.0) / 120.0 + 1.0], -1
        )
        h = torch.zeros(1, b, 8)
        if self.streaming and self.hidden.dim() == 3 and self.hidden.shape[1] == b:
            h = self.hidden
        y, h = self.gru(controls, h)
        if self.streaming:
            self.hidden = h
        amps = torch.softmax(self.out(y), -1) * torch.pow(10.0, loud.clamp(-120.0, 0.0) / 20.0).unsqueeze(-1)
        # frame -> sample rate by holding each frame for HOP samples
        f0_s = f0.repeat_interleave(self.hop, dim=1)
        amps_s = amps.repeat_interleave(self.hop, dim=1)  # (B, T, K)
        start = torch.zeros(b, 1, dtype=torch.float64)
        if self.streaming and self.phase.dim() == 2 and self.phase.shape[0] == b:
            start = self.phase
        # float64 phase, wrapped: offline (one long call) and streamed phases agree to float32 precision
        phase64 = start + torch.cumsum(f0_s.to(torch.float64) * (2 * math.pi / self.sr), dim=1)
        phase64 = torch.remainder(phase64, 2 * math.pi)
        if self.streaming:
            self.phase = phase64[:, -1:]
        phase = phase64.to(torch.float32)
        nyquist = (f0_s.unsqueeze(-1) * self.harmonics) < self.sr / 2
        audio = (torch.sin(phase.unsqueeze(-1) * self.harmonics) * amps_s * nyquist).sum(-1)
        return audio.unsqueeze(1)

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        method: dict[str, Any] = {"params": [2, HOP, 1, 1], "output_labels": ["(signal) audio"]}
        if self.declare == "inputs":
            method["inputs"] = ["f0_hz", "loudness_db"]
        if self.declare in ("inputs", "labels", "hook"):
            method["input_labels"] = ["(signal) f0 in Hz", "(signal) loudness in dB"]
        return {"methods": {"forward": method}, "sample_rate": SR, "streaming": self.streaming}


class HookedDDSPLike(DDSPLike):
    """Makes its own inputs: a constant 330 Hz and the loudness computed from the audio, 6 dB down."""

    @torch.jit.ignore
    def example_inputs(self, audio: np.ndarray, sample_rate: int) -> dict[str, torch.Tensor]:
        from acids_data.features import loudness

        assert sample_rate == SR
        loud = torch.from_numpy(loudness(audio, sample_rate, HOP)) - 6.0
        return {"forward": torch.stack([torch.full_like(loud, 330.0), loud])[None]}


def checkpoint(tmp_path, name: str, declare: str = "inputs") -> Any:
    """A checkpoint of family ``name`` whose exportable builds a :class:`DDSPLike` (registered in-process)."""
    cls = HookedDDSPLike if declare == "hook" else DDSPLike
    registry.register(name, lambda path, streaming=True: cls(streaming, declare).eval())
    return save_checkpoint(
        tmp_path / f"{name}.ckpt", make_envelope(format=f"acids-{name}", format_version=1, payload={})
    )
