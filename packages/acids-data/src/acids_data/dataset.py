"""A torch ``Dataset`` over a dataset directory (``acids-data[torch]``: the one module that imports torch).

Randomness (crop offsets, gains):
    * By default each item draws a seed from torch's RNG: the global generator in the main process, the
      generator torch seeds per worker and per epoch in DataLoader workers. Crops differ every epoch and
      ``torch.manual_seed`` makes a run repeatable for a given ``num_workers``.
    * After ``set_epoch(e)`` (call it every epoch, like ``DistributedSampler.set_epoch``) an item's
      randomness depends only on ``(seed, e, chunk index)``: identical whatever the number of workers or
      ranks. With ``persistent_workers=True`` workers keep the epoch they started with: use the default
      mode there.

Split: ``split="train"|"valid"`` assigns whole *source files* (never chunks) by a hash of their sha256:
a file is in valid when ``u(sha) < valid_fraction``, ``u`` uniform in [0, 1). So no file is in both
splits, the split is the same on every machine and run, and it is stable as files are added. With two
files or more, train and (when ``valid_fraction > 0``) valid each get at least one file. With a single
file, everything is train and valid is empty (a warning says so): split that file yourself.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from acids_data.reader import ShardReader
from acids_data.store import AUDIO

log = logging.getLogger(__name__)


def split_files(shas: Sequence[str], valid_fraction: float) -> np.ndarray:
    """For each source sha256, True when it belongs to the valid split (see the module docstring)."""
    u = np.array([int(hashlib.sha256(s.encode()).hexdigest()[:13], 16) / 16.0**13 for s in shas])
    valid = u < valid_fraction
    if len(shas) >= 2:
        if valid_fraction > 0 and not valid.any():
            valid[np.argmin(u)] = True
        if valid.all():
            valid[np.argmax(u)] = False
    else:
        valid[:] = False
    return valid


class ChunkDataset(torch.utils.data.Dataset):
    """Chunks of a dataset as dicts of tensors, with random crops, gain augmentation and transforms.

    Args:
        root: a dataset directory, its manifest.json, or a ``dataset`` record.
        keys: arrays to return (``"audio"`` and feature keys); default all.
        crop: samples per item (a multiple of feature_hop); None for the whole chunk. Offsets are random
            multiples of feature_hop, so features stay frame-aligned.
        gain_db: ``(low, high)``: multiply the audio by ``10 ** (g / 20)``, ``g ~ U(low, high)``, and add
            ``g`` to the loudness feature (in dB); None for no gain. Audio is not clipped.
        transforms: callables ``dict -> dict`` applied in order to the item (tensors), after the gain.
        split: None (everything), ``"train"`` or ``"valid"``: a split by source file.
        valid_fraction: the fraction of files in valid.
        seed: mixed into every random draw and nothing else (the split does not depend on it).

    Items: ``{"audio": float32 (C, crop or L), <feature>: float32 (..., frames)}``. For validation use
    ``gain_db=None`` and ``set_epoch(0)`` once: crops are then fixed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Mapping[str, Any],
        *,
        keys: Sequence[str] | None = None,
        crop: int | None = None,
        gain_db: tuple[float, float] | None = (-6.0, 0.0),
        transforms: Sequence[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = (),
        split: str | None = None,
        valid_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.reader = ShardReader(root, keys)
        L, fh = self.reader.chunk, self.reader.feature_hop
        self.step = int(fh) if fh else 1
        if crop is not None and not (0 < crop <= L and crop % self.step == 0):
            raise ValueError(
                f"crop must be in (0, {L}] and a multiple of the feature hop {self.step}: {crop}"
            )
        if gain_db is not None:
            low, high = (float(g) for g in gain_db)
            if not low <= high:
                raise ValueError(f"gain_db must be (low, high) with low <= high, got {gain_db}")
            gain_db = (low, high)
        if split not in (None, "train", "valid"):
            raise ValueError(f"split must be None, 'train' or 'valid', got {split!r}")
        if not 0.0 <= valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        self.crop = crop
        self.gain_db = gain_db
        self.transforms = tuple(transforms)
        self.split = split
        self.seed = int(seed)
        self.epoch: int | None = None
        if split is None:
            self.indices = np.arange(len(self.reader), dtype=np.int64)
        else:
            shas, ids = self.reader.file_index()
            valid = split_files(shas, valid_fraction)
            if split == "valid" and len(shas) == 1:
                log.warning("%s has a single source file: the valid split is empty", self.reader.root)
            self.indices = np.flatnonzero(valid[ids] if split == "valid" else ~valid[ids]).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Make crops and gains a function of ``(seed, epoch, chunk)`` (see the module docstring)."""
        self.epoch = int(epoch)

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio (Hz)."""
        return self.reader.sample_rate

    @property
    def channels(self) -> int:
        """Audio channels."""
        return self.reader.channels

    @property
    def chunk(self) -> int:
        """Samples per stored chunk (before any crop)."""
        return self.reader.chunk

    @property
    def feature_hop(self) -> int | None:
        """Samples per feature frame (None without features)."""
        return self.reader.feature_hop

    def __len__(self) -> int:
        return len(self.indices)

    def _rng(self, chunk: int) -> np.random.Generator:
        if self.epoch is None:
            draw = int(torch.randint(0, 2**62, (1,)).item())
            return np.random.default_rng([self.seed, draw])
        return np.random.default_rng([self.seed, self.epoch, chunk])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        chunk = int(self.indices[index])
        rng = self._rng(chunk) if (self.crop is not None or self.gain_db is not None) else None
        start, length = 0, None
        if self.crop is not None:
            start = int(rng.integers(0, (self.reader.chunk - self.crop) // self.step + 1)) * self.step
            length = self.crop
        item = self.reader.read(chunk, start, length)
        if self.gain_db is not None:
            g = float(rng.uniform(*self.gain_db))
            if AUDIO in item:
                item[AUDIO] *= np.float32(10.0 ** (g / 20.0))
            if "loudness" in item:
                item["loudness"] += np.float32(g)
        out = {k: torch.from_numpy(v) for k, v in item.items()}
        for t in self.transforms:
            out = t(out)
        return out

    def __repr__(self) -> str:
        return (
            f"ChunkDataset({str(self.reader.root)!r}, {len(self)} items, split={self.split}, "
            f"crop={self.crop}, gain_db={self.gain_db})"
        )
