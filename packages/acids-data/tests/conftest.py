"""Fixtures for the acids-data tests: the shared real-audio corpus and small synthetic signals/files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _skip_or_fail(key: str, reason: str) -> None:
    """Skip locally; fail in CI (env CI set) unless ACIDS_TEST_ALLOW_SKIP_<KEY> is set (STYLE.md §7)."""
    if os.environ.get("CI") and not os.environ.get(f"ACIDS_TEST_ALLOW_SKIP_{key}"):
        pytest.fail(f"{reason} (CI is set; set ACIDS_TEST_ALLOW_SKIP_{key}=1 to allow skipping)")
    pytest.skip(reason)


# --- real audio ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpus of sampled-instrument audio with ground-truth pitch (shared/data/README.md).

    Found at $ACIDS_SHARED_DATA, else at ``<repo root>/../shared/data``.
    """
    env = os.environ.get("ACIDS_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if not (root / "notes" / "notes.csv").is_file():
        _skip_or_fail("SHARED_DATA", f"shared test data not found at {root} (set ACIDS_SHARED_DATA)")
    return root


# --- synthetic signals and files ----------------------------------------------------------------------------


def _tone(freqs: float | list[float], sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    freqs = [freqs] if np.isscalar(freqs) else list(freqs)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * np.asarray(freqs)[:, None] * t)).astype(np.float32)


@pytest.fixture
def make_tone() -> Callable[..., np.ndarray]:
    """``make_tone(freqs, sample_rate, seconds, amplitude=0.5)``: (C, T) float32 sines, one channel per
    frequency, phase 0 at sample 0."""
    return _tone


@pytest.fixture
def write_audio(tmp_path: Path) -> Callable[..., Path]:
    """Write (C, T) audio to ``tmp_path / name`` with soundfile; returns the path.

    ``write_audio("a.flac", x, 44100, subtype="PCM_24")``; the format comes from the extension.
    """

    def write(name: str, x: np.ndarray, sample_rate: int, subtype: str | None = None, **kw) -> Path:
        path = tmp_path / name
        sf.write(path, np.asarray(x).T, sample_rate, subtype=subtype, **kw)
        return path

    return write


# --- measured figures ---------------------------------------------------------------------------------------


@pytest.fixture
def report(record_property) -> Callable[[str], None]:
    """``report("f0: 115x real time")``: a measured figure, listed in a "measured figures" section of the
    terminal summary (no ``-s`` needed)."""
    return lambda text: record_property("measured", text)


def pytest_terminal_summary(terminalreporter) -> None:
    lines = [
        f"{rep.nodeid}: {value}"
        for reports in terminalreporter.stats.values()
        for rep in reports
        if getattr(rep, "when", None) == "call"
        for key, value in getattr(rep, "user_properties", ())
        if key == "measured"
    ]
    if lines:
        terminalreporter.section("measured figures")
        for line in lines:
            terminalreporter.write_line(line)
