"""Reading a synth dataset (written by :mod:`acids_flowsynth.render`) into memory for training.

A synth dataset is small next to its audio (64 x 86 mel + P parameters per preset: 11k presets are
about 130 MB of float32 mel), so the trainer holds the mel and parameter arrays in memory and never reads
the audio.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from acids_core.errors import DataError
from acids_flowsynth.render import SPLITS


@dataclass
class SynthData:
    """The arrays of one synth dataset.

    Attributes:
        mel: float32 (N, n_mels, F), natural-log mel.
        params: float32 (N, P_all), normalised, every parameter of the synth.
        split: int64 (N,), 0 train / 1 valid / 2 test.
        subset: indices (into P_all) of the parameters the models predict.
        names: all parameter names.
        config: the dataset's render config (synth, note, velocity, hold, duration, sample_rate, ...).
    """

    mel: np.ndarray
    params: np.ndarray
    split: np.ndarray
    subset: list[int]
    names: list[str]
    config: dict[str, Any]
    root: str

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(mel, subset params) of one split."""
        k = SPLITS.index(name)
        sel = self.split == k
        return self.mel[sel], self.params[sel][:, self.subset]

    @property
    def subset_names(self) -> list[str]:
        return [self.names[i] for i in self.subset]

    def resplit(self, seed: int) -> SynthData:
        """The same presets with another seeded 80/10/10 split (:func:`acids_flowsynth.render.split_of`):
        the folds of a fixed preset bank, without rendering it again. Arrays are shared, not copied."""
        from acids_flowsynth.render import split_of

        split = split_of(len(self.split), seed)
        return dataclasses.replace(self, split=split, config={**self.config, "split_seed": int(seed)})


def load(root: str | os.PathLike[str] | Mapping[str, Any] | SynthData) -> SynthData:
    """Load a synth dataset (a directory, its manifest, or a ``dataset`` record; a :class:`SynthData` is
    returned as it is).

    Raises:
        DataError: not a synth dataset (no ``mel`` and ``params`` features or no split), or empty.
    """
    from acids_data.reader import ShardReader

    if isinstance(root, SynthData):
        return root
    reader = ShardReader(root, keys=("mel", "params") if _has_params(root) else None)
    m = reader.manifest
    missing = {"mel", "params"} - set(m["feature_keys"]) - set(m.get("chunk_keys", []))
    if missing:
        raise DataError(
            f"{reader.root}: not a synth dataset (no {sorted(missing)} features); make one with "
            "acids-flowsynth render"
        )
    desc = m.get("features", {}).get("params", {})
    splits = {e["sha256"]: e.get("split") for e in m["files"] if e.get("status") == "ok"}
    n = len(reader)
    if n == 0:
        raise DataError(f"{reader.root}: the dataset is empty")
    # whole frames only: ShardReader refuses a read that is not a multiple of the feature hop, and a
    # 4 s chunk (88,200 samples) is not one of 1,024
    length = reader.chunk // reader.feature_hop * reader.feature_hop
    framed = "params" not in reader.chunk_keys  # acids-flowsynth 0.1: (P, F), the vector over the frames
    first = reader.read(0, 0, length)
    mel = np.empty((n, *first["mel"].shape), np.float32)
    params = np.empty((n, first["params"].shape[0]), np.float32)
    split = np.empty(n, np.int64)
    with reader:
        for i in range(n):
            item = reader.read(i, 0, length)
            mel[i] = item["mel"]
            params[i] = item["params"][:, 0] if framed else item["params"]
            s = splits.get(reader.source_sha256(i))
            if s not in SPLITS:
                raise DataError(f"{reader.root}: chunk {i} has no train/valid/test split in the manifest")
            split[i] = SPLITS.index(s)
    return SynthData(
        mel=mel,
        params=params,
        split=split,
        subset=list(desc.get("subset_indices", range(params.shape[1]))),
        names=list(desc.get("names", [f"p{i}" for i in range(params.shape[1])])),
        config=dict(m.get("config", {})),
        root=str(reader.root),
    )


def _has_params(root: str | os.PathLike[str] | Mapping[str, Any]) -> bool:
    from acids_data.store import read_manifest

    m = read_manifest(root)
    return {"mel", "params"} <= set(m["feature_keys"]) | set(m.get("chunk_keys", []))
