"""Scriptable streaming wrapper for nn~ (TorchScript) and the ``acids.exportables`` entry point.

nn~ method ``forward``: 2 input channels (f0 in Hz, loudness in dB) at ``in_ratio = hop`` (nn~ hands one
value per hop: the last sample of each hop, reference/nntilde.md §1.3), 1 output channel at ratio 1. The
wrapped model streams: oscillator phase, GRU state, noise-filter tails and reverb tail carry over calls.
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

    def __init__(self, model: DDSP, streaming: bool = True) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.set_streaming(streaming)
        self.streaming = streaming
        self.hop = model.hop
        self.sample_rate = model.sample_rate
        self.register_buffer("forward_params", torch.tensor([2, model.hop, 1, 1]), persistent=False)
        self.forward_input_labels = ["(signal) f0 in Hz", "(signal) loudness in dB"]
        self.forward_output_labels = ["(signal) audio"]

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["forward"]

    @torch.jit.export
    def get_attributes(self) -> list[str]:
        return ["none"]

    @torch.jit.export
    def get_sample_rate(self) -> int:
        return self.sample_rate

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        """The acids-export description: methods, sample rate, streaming, latency (none: no look-ahead)."""
        return {
            "methods": {
                "forward": {
                    "params": [2, self.hop, 1, 1],
                    "input_labels": list(self.forward_input_labels),
                    "output_labels": list(self.forward_output_labels),
                }
            },
            "sample_rate": self.sample_rate,
            "streaming": self.streaming,
            "latency_samples": 0,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, 2, F): f0 (Hz) and loudness (dB) frames. Returns: (B, 1, F * hop) audio."""
        return self.model(x[:, 0], x[:, 1])


def script(module: ScriptedDDSP) -> torch.jit.ScriptModule:
    """``torch.jit.script`` with torch 2.13's TorchScript deprecation warnings silenced (nn~ needs it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


def exportable(source: str | os.PathLike[str] | DDSP, *, streaming: bool = True) -> ScriptedDDSP:
    """Entry point of ``acids.exportables`` (name ``ddsp``): a checkpoint path (or model) → scriptable module.

    ``torch.jit.script(exportable(path))`` is the nn~ TorchScript file; ``io_spec()`` describes it.
    """
    if isinstance(source, DDSP):
        return ScriptedDDSP(source, streaming=streaming)
    from acids_ddsp import checkpoint

    return ScriptedDDSP(checkpoint.load(source), streaming=streaming)
