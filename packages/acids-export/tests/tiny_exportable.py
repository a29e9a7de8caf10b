"""A tiny causal model with streaming state, registered as the ``tiny`` exportable in the tests.

Methods: ``forward`` (1 -> 1 ch, causal conv + GRU + causal conv, a ``gain`` attribute), ``encode``
(1 -> 4 ch, ratio 16) and ``decode`` (4 ch ratio 16 -> 1). Streaming state lives in reassigned buffers
(the contract of acids_export.registry). Checkpoints use the acids-core envelope, format ``acids-tiny``.
The conftest copies this file into a temporary site directory with a dist-info whose entry_points.txt
registers it, so discovery goes through real ``importlib.metadata`` entry points.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FORMAT = "acids-tiny"
RATIO = 16


class CausalConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, streaming: bool):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel)
        self.left = kernel - 1
        self.streaming = streaming
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streaming:
            if self.cache.dim() != 3 or self.cache.shape[0] != x.shape[0]:
                self.cache = torch.zeros(x.shape[0], x.shape[1], self.left, dtype=x.dtype)
            x = torch.cat([self.cache, x], -1)
            self.cache = x[:, :, x.shape[-1] - self.left :]
        else:
            x = nn.functional.pad(x, (self.left, 0))
        return self.conv(x)


class StatefulGRU(nn.Module):
    def __init__(self, channels: int, streaming: bool):
        super().__init__()
        self.gru = nn.GRU(channels, channels, batch_first=True)
        self.streaming = streaming
        self.register_buffer("hidden", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(1, x.shape[0], x.shape[1], dtype=x.dtype)
        if self.streaming and self.hidden.dim() == 3 and self.hidden.shape[1] == x.shape[0]:
            h = self.hidden
        y, h = self.gru(x.transpose(1, 2), h)
        if self.streaming:
            self.hidden = h
        return y.transpose(1, 2)


class Tiny(nn.Module):
    def __init__(self, channels: int = 8, latent: int = 4, streaming: bool = False):
        super().__init__()
        self.pre = CausalConv(1, channels, 5, streaming)
        self.gru = StatefulGRU(channels, streaming)
        self.post = CausalConv(channels, 1, 3, streaming)
        self.enc_in = CausalConv(1, channels, 3, streaming)
        self.down = nn.Conv1d(channels, latent, RATIO, stride=RATIO)
        self.up = nn.ConvTranspose1d(latent, channels, RATIO, stride=RATIO)
        self.dec_out = CausalConv(channels, 1, 3, streaming)
        self.gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.post(self.gru(torch.tanh(self.pre(x))))) * self.gain

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.tanh(self.enc_in(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dec_out(torch.tanh(self.up(z)))) * self.gain


class ScriptedTiny(nn.Module):
    def __init__(self, model: Tiny, streaming: bool):
        super().__init__()
        self.model = model
        self.streaming = streaming

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    @torch.jit.export
    def set_gain(self, gain: float) -> None:
        self.model.gain = gain

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        return {
            "methods": {
                "forward": [1, 1, 1, 1],
                "encode": {"params": [1, 1, 4, RATIO], "output_labels": [f"(latent) {i}" for i in range(4)]},
                "decode": [4, RATIO, 1, 1],
            },
            "attributes": {"gain": {"default": [1.0]}},
            "sample_rate": 16000,
            "streaming": self.streaming,
            "latency_samples": 0,
        }


def save(path: Any, seed: int = 0) -> Any:
    from acids_core.checkpoint import make_envelope, save_checkpoint

    torch.manual_seed(seed)
    model = Tiny()
    env = make_envelope(
        format=FORMAT,
        format_version=1,
        payload={"state_dict": model.state_dict()},
        config={"channels": 8, "latent": 4},
    )
    return save_checkpoint(path, env)


def exportable(path: Any, *, streaming: bool = True) -> ScriptedTiny:
    from acids_core.checkpoint import load_checkpoint

    env = load_checkpoint(path, format=FORMAT, max_version=1)
    model = Tiny(**env["config"], streaming=streaming)
    model.load_state_dict(env["payload"]["state_dict"])
    for p in model.parameters():
        p.requires_grad_(False)
    return ScriptedTiny(model.eval(), streaming).eval()
