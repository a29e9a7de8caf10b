"""Synth datasets: sample presets, render them, and write an acids-data dataset (one chunk per preset).

Layout in the acids-data format (``acids_data.store``; one "source" per preset):

* ``audio``: int16 (n, 1, L), L = duration x sample_rate (4 s at 22.05 kHz: 88,200 samples);
* ``mel``: float16 (n, 64, F), the natural-log mel of acids-data's :func:`~acids_data.features.log_mel`
  with the paper's analysis (n_fft 2048, hop 1024, fmin 30 Hz, fmax 11 kHz): F = L // 1024 = 86 frames
  (the model crops to 80, as the paper);
* ``params``: float32 (n, P), the preset's *normalised* parameter vector (all P parameters of the synth,
  table order), an acids-data *chunk array* (``chunk_keys``: one row per chunk, no frame axis).
  Datasets written by acids-flowsynth 0.1 stored it as a feature (n, P, F), the vector repeated over the
  frames; :mod:`acids_flowsynth.data` reads both.

The manifest's ``config`` says which synth, subset, seed, note, velocity, hold and duration made the
dataset; its ``features.params`` lists the parameter table and the subset's names and indices. Every
preset's file-table entry carries ``split`` ("train", "valid" or "test": a fixed 80/10/10 split by a seeded
permutation of the preset indices) and ``preset`` (its index). A preset's sha256 hashes its parameter
vector and the render settings, so re-running the same command resumes, and duplicate presets are
recorded once (acids-data marks the copies as skipped).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acids_core.log import Progress, get_logger
from acids_flowsynth import __version__
from acids_flowsynth.synth import SynthBackend, default_vector, get_backend, subset_indices

log = get_logger(__name__)

SPLITS = ("train", "valid", "test")
MEL = {"n_mels": 64, "n_fft": 2048, "hop": 1024, "fmin": 30.0, "fmax": 11000.0}


def sample_presets(backend: SynthBackend, n: int, subset: str | Sequence[str], seed: int) -> np.ndarray:
    """``n`` normalised presets (n, P): the subset's parameters uniform in [0, 1] (discrete ones snapped),
    the others at their defaults. Depends only on (backend table, subset, seed, n)."""
    idx = subset_indices(backend, subset)
    out = np.tile(np.asarray(default_vector(backend), np.float32), (n, 1))
    rng = np.random.default_rng(seed)
    draws = rng.random((n, len(idx)), dtype=np.float64)
    for j, i in enumerate(idx):
        col = draws[:, j]
        p = backend.params[i]
        if not p.continuous:
            col = np.round(col * (p.steps - 1)) / (p.steps - 1)
        out[:, i] = col
    return out


def split_of(n: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """A fixed split: for each preset index, 0 (train), 1 (valid) or 2 (test), by a seeded permutation."""
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_train = round(fractions[0] * n)
    n_valid = round(fractions[1] * n)
    labels = np.empty(n, np.int64)
    labels[perm[:n_train]] = 0
    labels[perm[n_train : n_train + n_valid]] = 1
    labels[perm[n_train + n_valid :]] = 2
    return labels


def preset_sha(vector: np.ndarray, settings: Mapping[str, Any]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()


def mel_of(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Natural-log mel (64, T // 1024) of mono audio (T,), the paper's analysis, via acids-data."""
    from acids_data.features import log_mel

    return log_mel(
        audio,
        sample_rate,
        MEL["hop"],
        n_mels=MEL["n_mels"],
        n_fft=MEL["n_fft"],
        fmin=MEL["fmin"],
        fmax=min(MEL["fmax"], sample_rate / 2),
    )


def bank_vectors(
    backend: SynthBackend, subset: str | Sequence[str], banks: str | os.PathLike[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The backend's preset banks projected on ``subset`` (others at their defaults), duplicates dropped:
    (names, normalised vectors (n, P))."""
    from acids_core.errors import UsageError

    if not hasattr(backend, "bank_presets"):
        raise UsageError(f"{backend.name} has no preset banks: give --presets N")
    names, full = backend.bank_presets(banks)
    idx = subset_indices(backend, subset)
    out = np.tile(np.asarray(default_vector(backend), np.float32), (len(full), 1))
    out[:, idx] = full[:, idx]
    _, first = np.unique(out, axis=0, return_index=True)
    keep = np.sort(first)
    return [names[i] for i in keep], out[keep]


def render_dataset(
    synth: str,
    presets: int | str,
    out: str | os.PathLike[str],
    *,
    subset: str = "16",
    banks: str | os.PathLike[str] | None = None,
    seed: int = 0,
    sample_rate: int = 22050,
    note: int = 60,
    velocity: int = 100,
    hold: float = 3.0,
    duration: float = 4.0,
    batch: int = 16,
) -> dict[str, Any]:
    """Render ``presets`` random presets of ``synth`` (or, with ``presets="bank"``, the synth's preset banks,
    ``banks`` or its default ones, projected on ``subset`` and de-duplicated) into the dataset directory
    ``out``; return the manifest.

    Resumable: presets already in ``out`` (same settings) are not rendered again.
    """
    from acids_data.store import ShardWriter, read_manifest

    backend = get_backend(synth)
    idx = subset_indices(backend, subset)
    names = [p.name for p in backend.params]
    preset_names: list[str] | None = None
    if presets == "bank":
        preset_names, vectors = bank_vectors(backend, subset, banks)
        presets = len(vectors)
    else:
        presets = int(presets)
        if presets < 1:
            raise ValueError("presets must be >= 1")
        vectors = sample_presets(backend, presets, subset, seed)
    labels = split_of(presets, seed)
    L = round(duration * sample_rate)
    hop = MEL["hop"]
    frames = L // hop
    settings = {
        "synth": synth,
        "note": note,
        "velocity": velocity,
        "hold": hold,
        "duration": duration,
        "sample_rate": sample_rate,
    }
    config = {**settings, "presets": presets, "subset": subset, "seed": seed, "split": [0.8, 0.1, 0.1]}
    if preset_names is not None:
        config["source"] = "bank"
    features = {
        "mel": {**MEL, "log": "ln(max(power, 1e-10))", "frames": frames},
        "params": {
            "names": names,
            "table": [p.describe() for p in backend.params],
            "subset": [names[i] for i in idx],
            "subset_indices": idx,
            "normalised": True,
            "layout": "(P,): a chunk array",
        },
    }
    writer = ShardWriter(
        out,
        sample_rate=sample_rate,
        channels=1,
        chunk=L,
        hop=L,
        feature_hop=hop,
        feature_keys=("mel",),
        chunk_keys=("params",),
        features_desc=features,
        config=config,
        created_by=f"acids-flowsynth {__version__}",
    )
    shas = [preset_sha(v, settings) for v in vectors]
    todo = [i for i in range(presets) if writer.file_status(shas[i]) is None]
    if len(todo) < presets:
        log.info("%d of %d presets already rendered in %s", presets - len(todo), presets, out)
    with writer, Progress(total=len(todo), desc="render", unit="presets") as bar:
        for start in range(0, len(todo), batch):
            ids = todo[start : start + batch]
            with torch.inference_mode():
                audio = backend.render(
                    torch.from_numpy(vectors[ids]),
                    note=note,
                    velocity=velocity,
                    hold=hold,
                    duration=duration,
                    sample_rate=sample_rate,
                ).numpy()
            for j, i in enumerate(ids):
                x = audio[j]
                pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
                feats = {
                    "mel": mel_of(x, sample_rate)[None],
                    "params": vectors[i][None, :],
                }
                path = f"{synth}/preset-{i:06d}"
                writer.add_chunks(shas[i], path, pcm[None, None], feats, 0, [0])
                peak = float(np.abs(x).max())
                writer.finish_file(
                    {
                        "path": path,
                        "sha256": shas[i],
                        "status": "ok",
                        "chunks": 1,
                        "duration": duration,
                        "sample_rate": sample_rate,
                        "channels": 1,
                        "split": SPLITS[int(labels[i])],
                        "preset": i,
                        "peak": peak,
                        **({"name": preset_names[i]} if preset_names is not None else {}),
                    }
                )
            bar.update(len(ids))
    return read_manifest(Path(out))


def split_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(SPLITS, 0)
    for e in manifest.get("files", []):
        if e.get("status") == "ok" and e.get("split") in counts:
            counts[e["split"]] += 1
    return counts
