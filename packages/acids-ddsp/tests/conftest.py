"""Shared fixtures: the tiny config and synthetic f0/loudness frames."""

from __future__ import annotations

import pytest
import torch

from acids_ddsp.config import DDSPConfig, preset

# one thread: the test machines are shared 2-core boxes, where two torch threads (oneDNN GRU) under load
# were measured 40x slower than one
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny() -> DDSPConfig:
    return preset("tiny")


def random_controls(batch: int, frames: int, generator: torch.Generator | None = None):
    """Smooth random f0 (Hz, 100-1000) and loudness (dB, -70..-5) contours, each (B, 1, F)."""
    g = generator
    knots = max(2, frames // 16)
    f0_knots = 100.0 * 10.0 ** torch.rand(batch, 1, knots, generator=g)
    ld_knots = -70.0 + 65.0 * torch.rand(batch, 1, knots, generator=g)
    f0 = torch.nn.functional.interpolate(f0_knots, size=frames, mode="linear", align_corners=True)
    loudness = torch.nn.functional.interpolate(ld_knots, size=frames, mode="linear", align_corners=True)
    return f0, loudness
