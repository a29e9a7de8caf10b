"""PNG figures: timbre transfer (input vs output f0/loudness) and training (loss curve, spectrograms).

matplotlib (the ``train`` extra) is imported inside the functions with the Agg backend; callers check
:func:`available` first and log a warning when it is missing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import numpy as np

VOICED = 0.5


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def transfer_png(
    path: str | os.PathLike[str],
    frame_rate: float,
    source: dict[str, np.ndarray],
    controls: tuple[np.ndarray, np.ndarray],
    output: dict[str, np.ndarray],
    title: str = "",
) -> None:
    """Input vs output f0 and loudness of a timbre transfer.

    Args:
        path: the PNG to write.
        frame_rate: frames per second.
        source: features of the input (f0, f0_confidence, loudness).
        controls: (f0, loudness) given to the model (after the adjustments).
        output: features tracked on the resynthesis (f0, f0_confidence, loudness).
        title: figure title.
    """
    plt = _pyplot()
    fig, (ax_f0, ax_ld) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    t = np.arange(len(source["f0"])) / frame_rate

    def voiced(feats: dict[str, np.ndarray]) -> np.ndarray:
        return np.where(feats["f0_confidence"] >= VOICED, feats["f0"], np.nan)

    ax_f0.plot(t, voiced(source), label="input (voiced)", color="tab:blue", lw=1.2)
    ax_f0.plot(
        t,
        np.where(source["f0_confidence"] >= VOICED, controls[0], np.nan),
        label="model f0",
        color="tab:orange",
        lw=1.0,
        ls="--",
    )
    ax_f0.plot(t[: len(output["f0"])], voiced(output), label="output (tracked)", color="tab:green", lw=1.0)
    ax_f0.set_yscale("log")
    ax_f0.set_ylabel("f0 (Hz)")
    ax_f0.legend(loc="upper right", fontsize=8)
    ax_ld.plot(t, source["loudness"], label="input", color="tab:blue", lw=1.2)
    ax_ld.plot(t, controls[1], label="model loudness", color="tab:orange", lw=1.0, ls="--")
    ax_ld.plot(t[: len(output["loudness"])], output["loudness"], label="output", color="tab:green", lw=1.0)
    ax_ld.set_ylabel("loudness (dB, A)")
    ax_ld.set_xlabel("time (s)")
    ax_ld.set_ylim(max(-100.0, float(np.min(source["loudness"])) - 5), 5)
    ax_ld.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _log_spec(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T + 1e-6)


def training_png(
    path: str | os.PathLike[str],
    steps: Sequence[int],
    losses: Sequence[float],
    target: np.ndarray,
    output: np.ndarray,
    sample_rate: int,
) -> None:
    """Loss curve, and log spectrograms of a target crop and the model's resynthesis of it."""
    plt = _pyplot()
    fig = plt.figure(figsize=(10, 7))
    ax = fig.add_subplot(3, 1, 1)
    ax.plot(steps, losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("spectral loss")
    ax.set_yscale("log")
    top = max(_log_spec(target).max(), _log_spec(output).max())
    for i, (name, x) in enumerate((("target", target), ("resynthesis", output))):
        a = fig.add_subplot(3, 1, 2 + i)
        a.imshow(
            _log_spec(x),
            origin="lower",
            aspect="auto",
            vmin=top - 80,
            vmax=top,
            extent=(0, len(x) / sample_rate, 0, sample_rate / 2000),
            cmap="magma",
        )
        a.set_ylabel(f"{name}\nkHz")
    fig.axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
