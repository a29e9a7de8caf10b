"""Exportables that break nn~ in the ways reference/nntilde.md §1.6-1.7 lists (registered in-process)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from acids_core.checkpoint import make_envelope, save_checkpoint
from acids_export import registry


class Gain(nn.Module):
    """forward (1 -> 1) with a configurable declared ratio and an optional misbehaviour."""

    def __init__(self, ratio: int = 1, mode: str = "ok"):
        super().__init__()
        self.ratio = ratio
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "short":
            return x[..., : x.shape[-1] - 1]
        if self.mode == "nan":
            return x / 0.0
        return x[..., :: self.ratio] * 0.5

    @torch.jit.ignore
    def io_spec(self) -> dict[str, Any]:
        return {"methods": {"forward": [1, 1, 1, self.ratio]}, "sample_rate": 8000, "streaming": False}


class StftUser(Gain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x[:, 0], 64, 16, window=torch.ones(64), return_complex=True)
        return x * spec.abs().mean()


def checkpoint(tmp_path, name: str, **kwargs: Any):
    """A checkpoint of family ``name`` whose exportable builds ``Gain(**kwargs)`` (``StftUser`` for stft)."""
    cls = StftUser if kwargs.get("mode") == "stft" else Gain
    registry.register(name, lambda path, streaming=True: cls(**kwargs))
    return save_checkpoint(
        tmp_path / f"{name}.ckpt", make_envelope(format=f"acids-{name}", format_version=1, payload={})
    )


class Spectral(Gain):
    """Scales the signal by its mean STFT magnitude (an STFT in the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x[:, 0], 64, 16, window=self.window, return_complex=False)  # the real form
        mag = torch.sqrt(spec[..., 0] ** 2 + spec[..., 1] ** 2 + 1e-9)
        return x * mag.mean(dim=(1, 2))[:, None, None]


class Normed(Gain):
    """A LayerNorm over channels (LayerNormalization in ONNX opset 17)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(x.transpose(1, 2)).transpose(1, 2)


def model_checkpoint(tmp_path, name: str, cls: type) -> Any:
    torch.manual_seed(0)
    model = cls().eval()
    registry.register(name, lambda path, streaming=True: model)
    return save_checkpoint(
        tmp_path / f"{name}.ckpt", make_envelope(format=f"acids-{name}", format_version=1, payload={})
    )


class Unfolder(Gain):
    """Frames the signal with ``Tensor.unfold``: the ONNX exporter cannot size it on a dynamic time axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.unfold(-1, 4, 1).mean(-1)
        return nn.functional.pad(frames, (3, 0))


class Rounding(Gain):
    """Quantises the signal with ``torch.round`` (ONNX Round: not in TensorRT 8.2's operator table)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8.0) / 8.0
