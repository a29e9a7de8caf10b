"""``ModelContract``: the contract tests every model package runs on its tiny configs (STYLE.md §7).

Subclass it in a model package's tests and say how to build the model and its input::

    class TestTinyRave(ModelContract):
        ratio = 64              # input samples per output step (for the causality check)
        block = 512             # streaming block, a multiple of the model's ratio

        def make_model(self):
            return build(TINY).eval()

        def make_input(self, batch, length):
            return (torch.randn(batch, 1, length),)

        def save(self, model, path): ...
        def load(self, path): ...

and pytest collects: streaming == offline, causality through gradients, scripted == eager,
``torch.export`` == eager, batch == per item, checkpoint round trip and determinism. Switch one off
with a class attribute (``scriptable = False``) and say why in a comment.

torch is imported lazily: acids-core does not depend on it; only model test suites import this.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest


def _torch() -> Any:
    import torch

    return torch


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return x if isinstance(x, tuple) else (x,)


def _first_tensor(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


class ModelContract:
    """Base class of the model contract tests (not collected itself: its name has no ``Test`` prefix)."""

    #: samples per streaming call; a multiple of ``ratio``
    block: int = 512
    #: total input length of the test signal; a multiple of ``block``
    length: int = 4096
    #: input samples per output step (1 for sample-to-sample models)
    ratio: int = 1
    batch: int = 3
    seed: int = 0
    causal: bool = True
    #: gradient allowed from the future, relative to the largest gradient from the past (FFT round-off)
    causal_rtol: float = 0.0
    streaming: bool = True
    scriptable: bool = True
    exportable: bool = True
    atol: float = 1e-5
    rtol: float = 1e-4

    # --- what a subclass provides -------------------------------------------------------------
    def make_model(self) -> Any:
        """A tiny model, in eval mode, whose output is deterministic."""
        raise NotImplementedError

    def make_input(self, batch: int, length: int) -> tuple[Any, ...]:
        """The inputs of ``forward`` as a tuple of tensors, time on the last axis."""
        raise NotImplementedError

    def save(self, model: Any, path: Path) -> None:
        """Write ``model`` as the package's checkpoint at ``path``."""
        raise NotImplementedError

    def load(self, path: Path) -> Any:
        """Read a model back from the package's checkpoint at ``path``."""
        raise NotImplementedError

    # --- hooks with defaults ------------------------------------------------------------------
    def forward(self, model: Any, *inputs: Any) -> Any:
        return model(*inputs)

    def set_streaming(self, model: Any, flag: bool) -> None:
        """Switch streaming on (fresh state) or off."""
        model.set_streaming(flag)

    def causal_horizon(self, step: int, input_index: int, input_length: int) -> int:
        """The first sample of input ``input_index`` that output step ``step`` must NOT depend on.

        Default: the end of the step's own input block, ``(step + 1) * ratio``. Override for inputs at
        another rate (e.g. frame-rate controls of an audio-rate output: ``step // hop + 1``).
        """
        return (step + 1) * self.ratio

    def split_input(self, inputs: tuple[Any, ...], block: int) -> list[tuple[Any, ...]]:
        """Cut the inputs into consecutive blocks along time (override for mixed-rate inputs)."""
        pieces = [x.split(block, dim=-1) for x in inputs]
        return [tuple(p) for p in zip(*pieces, strict=True)]

    def concat_output(self, outs: list[Any]) -> Any:
        torch = _torch()
        if isinstance(outs[0], (tuple, list)):
            return tuple(torch.cat([o[i] for o in outs], dim=-1) for i in range(len(outs[0])))
        return torch.cat(outs, dim=-1)

    # --- helpers --------------------------------------------------------------------------------
    def _inputs(self, batch: int | None = None, length: int | None = None) -> tuple[Any, ...]:
        torch = _torch()
        torch.manual_seed(self.seed)
        return _as_tuple(self.make_input(batch or self.batch, length or self.length))

    def _close(self, actual: Any, expected: Any, what: str) -> None:
        torch = _torch()
        try:
            torch.testing.assert_close(actual, expected, atol=self.atol, rtol=self.rtol)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None

    # --- the contract ---------------------------------------------------------------------------
    def test_deterministic(self) -> None:
        torch = _torch()
        model = self.make_model()
        x = self._inputs()
        with torch.no_grad():
            self._close(self.forward(model, *x), self.forward(model, *x), "two identical calls differ")

    def test_streaming_matches_offline(self) -> None:
        if not self.streaming:
            pytest.skip("this model has no streaming mode")
        torch = _torch()
        if self.length % self.block or self.block % self.ratio:
            raise ValueError("length must be a multiple of block, and block a multiple of ratio")
        model = self.make_model()
        x = self._inputs()
        with torch.no_grad():
            self.set_streaming(model, False)
            offline = self.forward(model, *x)
            self.set_streaming(model, True)
            streamed = self.concat_output([self.forward(model, *c) for c in self.split_input(x, self.block)])
            self.set_streaming(model, False)
        self._close(streamed, offline, f"streaming in blocks of {self.block} differs from offline")

    def test_causal(self) -> None:
        if not self.causal:
            pytest.skip("this model is not causal")
        model = self.make_model()
        x = tuple(t.clone().requires_grad_(t.is_floating_point()) for t in self._inputs(batch=1))
        out = _first_tensor(self.forward(model, *x))
        steps = out.shape[-1]
        t = steps // 2
        out[..., t].sum().backward()
        # output step t may depend on inputs up to the end of its own input block, never after it
        for i, xi in enumerate(x):
            if xi.grad is None:
                continue
            horizon = self.causal_horizon(t, i, xi.shape[-1])
            past = xi.grad[..., :horizon].abs()
            future = xi.grad[..., horizon:].abs()
            past_max = past.max().item() if past.numel() else 0.0
            future_max = future.max().item() if future.numel() else 0.0
            assert future_max <= self.causal_rtol * past_max, (
                f"output step {t} depends on input {i} after sample {horizon} (not causal):"
                f" |grad| {future_max:.3g} vs {past_max:.3g} before"
            )
            assert past_max > 0.0, "the output ignores its input"

    def test_batch_matches_per_item(self) -> None:
        torch = _torch()
        model = self.make_model()
        x = self._inputs()
        with torch.no_grad():
            batched = self.forward(model, *x)
            singles = [self.forward(model, *(t[i : i + 1] for t in x)) for i in range(self.batch)]
        if isinstance(batched, (tuple, list)):
            per_item = tuple(torch.cat([s[k] for s in singles], dim=0) for k in range(len(batched)))
            batched = tuple(batched)
        else:
            per_item = torch.cat(singles, dim=0)
        self._close(per_item, batched, "a batch differs from its items run one by one")

    def test_scripted_matches_eager(self) -> None:
        if not self.scriptable:
            pytest.skip("not scriptable")
        torch = _torch()
        model = self.make_model()
        x = self._inputs()
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript for torch.export; nn~ still needs it (reference/nntilde.md)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
        with torch.no_grad():
            self._close(self.forward(scripted, *x), self.forward(model, *x), "TorchScript differs from eager")

    def test_export_matches_eager(self) -> None:
        if not self.exportable:
            pytest.skip("not exportable with torch.export")
        torch = _torch()
        model = self.make_model()
        x = self._inputs()
        exported = torch.export.export(model, x)
        with torch.no_grad():
            actual = self.forward(exported.module(), *x)
            self._close(actual, self.forward(model, *x), "torch.export differs from eager")

    def test_checkpoint_round_trip(self, tmp_path: Path) -> None:
        torch = _torch()
        model = self.make_model()
        path = tmp_path / "model.ckpt"
        self.save(model, path)
        loaded = self.load(path)
        x = self._inputs()
        with torch.no_grad():
            self._close(self.forward(loaded, *x), self.forward(model, *x), "a reloaded checkpoint differs")
