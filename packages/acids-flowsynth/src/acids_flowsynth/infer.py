"""Parameter inference from a sound file: audio → mel → model → parameters (+ re-render and a mel plot).

The input is taken as one note: resampled to the model's rate (mono), its pitch tracked and shifted to
the dataset's note (C4) with the duration kept (:mod:`acids_flowsynth.pitch`, as the reference server
does), then padded or cropped to the training duration (4 s). Unpitched sounds (fewer than a quarter of
the frames voiced) are not shifted; ``shift=False`` turns the shift off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acids_core.atomic import atomic_write_json
from acids_core.errors import DataError, MissingDependency
from acids_flowsynth import checkpoint
from acids_flowsynth.render import mel_of
from acids_flowsynth.synth import get_backend
from acids_flowsynth.train import full_vectors


def load_note(
    source: str | os.PathLike[str], meta: dict[str, Any], *, shift: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """A sound file taken as one note → (mono audio (T,) at the model's rate and duration, info).

    With ``shift``, the note's pitch is tracked and shifted to the dataset's note (its ``render.note``,
    C4) before the pad or crop. ``info``: ``f0`` (Hz, None when unpitched), ``midi`` and ``shift``
    (semitones applied).
    """
    from acids_data.audio import load as load_audio
    from acids_flowsynth.pitch import midi_of, note_pitch, shift_pitch

    r = meta.get("render", {})
    sr = int(r.get("sample_rate", 22050))
    length = round(float(r.get("duration", 4.0)) * sr)
    x = load_audio(source, sr, 1)[0]
    if x.size == 0:
        raise DataError(f"{source}: no audio")
    x = np.pad(x, (0, max(0, length - x.size)))[:length].astype(np.float32)
    info: dict[str, Any] = {"f0": None, "midi": None, "shift": 0.0}
    if shift:
        f0 = note_pitch(x, sr, seconds=float(r.get("hold", 3.0)))
        if f0 is not None:
            semis = float(r.get("note", 60)) - midi_of(f0)
            info = {"f0": f0, "midi": midi_of(f0), "shift": semis}
            x = shift_pitch(x, sr, semis)
    return x, info


def note_mel(source: str | os.PathLike[str], meta: dict[str, Any], *, shift: bool = True) -> np.ndarray:
    """A sound file taken as one note → its natural-log mel (64, F) (see :func:`load_note`)."""
    x, _ = load_note(source, meta, shift=shift)
    return mel_of(x, int(meta.get("render", {}).get("sample_rate", 22050)))


def infer_file(
    model_path: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    out_json: str | os.PathLike[str] | None = None,
    render_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    preset_path: str | os.PathLike[str] | None = None,
    shift: bool = True,
) -> dict[str, Any]:
    """Infer the parameters of ``source``; optionally write them (JSON), a re-render (WAV) and a PNG.

    Returns:
        A record body: ``source``, ``params`` ({name: physical value}), ``normalised``, ``pitch`` (the
        tracked ``f0``, ``midi`` and the ``shift`` in semitones applied before encoding), the written
        paths, and ``sc`` / ``mel_mse`` between the (shifted) input's and the re-render's mel when it is
        rendered.
    """
    model, meta = checkpoint.load(model_path)
    r = meta.get("render", {})
    sr = int(r.get("sample_rate", 22050))
    x, pitch = load_note(source, meta, shift=shift)
    mel = mel_of(x, sr)
    pred = model.infer(torch.from_numpy(mel)[None])
    vector = full_vectors(pred, meta)[0]
    backend = get_backend(meta["synth"])
    physical = {p.name: float(p.to_physical(float(vector[i]))) for i, p in enumerate(backend.params)}
    result: dict[str, Any] = {
        "source": str(Path(source).resolve()),
        "model": str(Path(model_path).resolve()),
        "synth": meta["synth"],
        "params": physical,
        "normalised": {n: float(vector[i]) for i, n in enumerate(meta["names"])},
        "inferred": list(meta["subset"]),
        "pitch": pitch,
    }
    if out_json is not None:
        atomic_write_json(Path(out_json), result)
        result["path"] = str(Path(out_json).resolve())
    if preset_path is not None:
        if not hasattr(backend, "preset_text"):
            raise DataError(f"the {backend.name} backend has no preset file format")
        Path(preset_path).parent.mkdir(parents=True, exist_ok=True)
        Path(preset_path).write_text(backend.preset_text(vector.tolist(), Path(source).stem))
        result["preset"] = str(Path(preset_path).resolve())
    if render_path is not None or plot_path is not None:
        with torch.inference_mode():
            audio = backend.render(
                vector[None],
                note=r.get("note", 60),
                velocity=r.get("velocity", 100),
                hold=r.get("hold", 3.0),
                duration=r.get("duration", 4.0),
                sample_rate=sr,
            )[0].numpy()
        re_mel = mel_of(audio, sr)
        a, b = np.log(np.exp(mel) + 1e-3), np.log(np.exp(re_mel) + 1e-3)
        result["sc"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-8))
        result["mel_mse"] = float(np.mean((a - b) ** 2))
        if render_path is not None:
            import soundfile as sf

            Path(render_path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(render_path, audio, sr, subtype="FLOAT")
            result["render"] = str(Path(render_path).resolve())
        if plot_path is not None:
            plot_mels(a, b, plot_path, title=Path(source).name)
            result["plot"] = str(Path(plot_path).resolve())
    return json.loads(json.dumps(result))


def plot_mels(
    target: np.ndarray, rendered: np.ndarray, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Target and re-rendered mel spectrograms, one above the other, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("plots need matplotlib: pip install acids-flowsynth[train]") from None
    lo, hi = float(min(target.min(), rendered.min())), float(max(target.max(), rendered.max()))
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, m, name in zip(axes, (target, rendered), ("target", "re-rendered"), strict=True):
        ax.imshow(m, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set_ylabel(f"{name}\nmel band")
    axes[0].set_title(title)
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
