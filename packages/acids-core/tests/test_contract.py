"""The contract base class run on a real tiny streaming model, and shown to catch broken ones."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint  # noqa: E402
from acids_core.testing import ModelContract  # noqa: E402


class CachedCausalConv(nn.Module):
    """A causal conv1d that keeps its left context between calls when streaming."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride)
        self.pad = kernel - stride
        self.streaming = False
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streaming:
            if self.cache.numel() == 0 or self.cache.shape[0] != x.shape[0]:
                self.cache = x.new_zeros(x.shape[0], x.shape[1], self.pad)
            x = torch.cat([self.cache, x], dim=-1)
            self.cache = x[..., x.shape[-1] - self.pad :]
        else:
            x = nn.functional.pad(x, (self.pad, 0))
        return self.conv(x)


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = CachedCausalConv(1, 4, 5, stride=2)
        self.b = CachedCausalConv(4, 2, 3, stride=2)

    def set_streaming(self, flag: bool) -> None:
        for m in (self.a, self.b):
            m.streaming = flag
            m.cache = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class LeakyEncoder(TinyEncoder):
    """Looks one step into the future: must fail the causality test."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.roll(x, -8, dims=-1))


class StatelessStreaming(TinyEncoder):
    """Forgets its cache between blocks: must fail streaming == offline."""

    def set_streaming(self, flag: bool) -> None:
        super().set_streaming(False)


class TestTinyEncoderContract(ModelContract):
    ratio = 4
    block = 64
    length = 512

    def make_model(self):
        torch.manual_seed(0)
        return TinyEncoder().eval()

    def make_input(self, batch, length):
        return (torch.randn(batch, 1, length),)

    def save(self, model, path):
        save_checkpoint(
            path, make_envelope(format="tiny", format_version=1, payload={"state": model.state_dict()})
        )

    def load(self, path):
        model = TinyEncoder()
        model.load_state_dict(load_checkpoint(path, format="tiny", max_version=1)["payload"]["state"])
        return model.eval()


def test_contract_catches_a_non_causal_model():
    case = TestTinyEncoderContract()
    case.make_model = lambda: LeakyEncoder().eval()
    with pytest.raises(AssertionError, match="not causal"):
        case.test_causal()


def test_contract_catches_lost_streaming_state():
    case = TestTinyEncoderContract()
    case.make_model = lambda: StatelessStreaming().eval()
    with pytest.raises(AssertionError, match="streaming in blocks of 64 differs"):
        case.test_streaming_matches_offline()
