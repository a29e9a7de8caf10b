"""Training batches: resumable, rank-sharded epochs over an acids-data ``ChunkDataset``.

:class:`EpochBatches` turns a dataset into the batches of a run, step by step. Each epoch shuffles with a
``DistributedSampler`` (seeded; one replica in a single process) and calls ``set_epoch`` on the sampler
and the dataset, so crops and gains depend only on ``(seed, epoch, chunk)``. The batches of one epoch are
fixed lists of indices, so a run resumed at step ``s`` starts at exactly the batch it would have seen
(epoch ``s // per_epoch``, position ``s % per_epoch``). With ``world`` ranks, rank r takes every
``world``-th index of the shuffled epoch: the union of the ranks' batch k is the single-process batch k
of the same global batch size (in another order), which is what makes data-parallel runs match.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def collate_audio(items: list[dict[str, Any]]) -> torch.Tensor:
    """Items ``{"audio": (C, T)}`` -> (B, C, T)."""
    return torch.stack([i["audio"] for i in items])


class EpochBatches:
    """Batches of ``batch // world`` items for this rank (``batch`` is the global batch size).

    Args:
        dataset: map-style dataset; ``set_epoch(e)`` is called on it when it has one.
        batch: global batch size, a multiple of ``world``.
        rank, world: this process's rank and the number of ranks.
        seed: shuffling seed (the same on every rank).
        workers: DataLoader worker processes.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch: int,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        workers: int = 0,
        collate: Any = collate_audio,
    ):
        if batch % world:
            raise ValueError(f"the batch size {batch} is not a multiple of the number of ranks {world}")
        self.dataset = dataset
        self.local = batch // world
        self.sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_epoch = len(self.sampler) // self.local
        if self.per_epoch == 0:
            raise ValueError(f"{len(dataset)} items cannot fill one batch of {batch}")  # type: ignore[arg-type]
        self.workers = workers
        self.collate = collate

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The index lists of this rank's batches in ``epoch``."""
        self.sampler.set_epoch(epoch)
        idx = list(self.sampler)
        return [idx[i * self.local : (i + 1) * self.local] for i in range(self.per_epoch)]

    def from_step(self, step: int) -> Iterator[torch.Tensor]:
        """The batches of steps ``step``, ``step + 1``, ... (endless)."""
        epoch, skip = divmod(step, self.per_epoch)
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            batches = self.epoch_batches(epoch)[skip:]
            loader = DataLoader(
                self.dataset, batch_sampler=batches, num_workers=self.workers, collate_fn=self.collate
            )
            yield from loader
            epoch, skip = epoch + 1, 0
