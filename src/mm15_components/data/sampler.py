"""Seeded batch samplers that cover ranks and resume mid-epoch, and the loader that counts
the batches training consumed so a checkpoint can continue the exact data order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Sampler

if TYPE_CHECKING:
    from mm15_components.data.mixture import MixtureCounts


class EpochBatchSampler(Sampler[list[int]], ABC):
    """This rank's batches of each epoch, from a position ``(epoch, consumed)``.

    Subclasses say how an epoch's batches are formed (``epoch_batches``, over all ranks); this
    class deals them round-robin to ranks (repeating the first ones so every rank gets the
    same count, as ``DistributedSampler`` pads) and skips the ``consumed`` batches of the
    current epoch, which is how a resumed run continues mid-epoch. ``ResumableLoader`` counts
    the consumed batches; once all are, the next iteration starts the next epoch, so a plain
    loop needs no ``set_epoch`` calls, and an epoch cut short (``limit_train_batches``) is
    finished before the next one starts.

    Args:
        shuffle: a new seeded order every epoch; False keeps index order.
        seed: fixes every epoch's order (with the epoch number).
        num_replicas / rank: the data-parallel world size and this process's rank.
    """

    def __init__(
        self, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, {num_replicas}")
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.consumed = 0

    @abstractmethod
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch``, in order."""

    def generator(self, epoch: int) -> torch.Generator:
        """The random source of ``epoch``'s order."""
        return torch.Generator().manual_seed(self.seed + epoch)

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, the consumed ones included."""
        batches = self.epoch_batches(self.epoch)
        if not batches:
            return []
        padding = -len(batches) % self.num_replicas
        batches = batches + (batches * (padding // len(batches) + 1))[:padding]
        return batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(self.rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        if batches and self.consumed >= len(batches):
            self.epoch, self.consumed = self.epoch + 1, 0
            batches = self.rank_batches()
        yield from batches[self.consumed :]

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` unless the current one has begun (Lightning calls this at every
        epoch start). A begun epoch runs to its end first, then the next one follows: Lightning
        counts a run stopped by ``max_steps`` as a finished epoch, and the resumed run must
        still finish the data of the interrupted one."""
        if self.consumed == 0:
            self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])


class ResumableBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` consecutive indices of a seeded per-epoch permutation of
    ``range(size)`` (the last one may be smaller); see ``EpochBatchSampler``."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(shuffle, seed, num_replicas, rank)
        self.size = size
        self.batch_size = batch_size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = (
            torch.randperm(self.size, generator=self.generator(epoch))
            if self.shuffle
            else torch.arange(self.size)
        )
        return [chunk.tolist() for chunk in order.split(self.batch_size)]


class ResumableLoader:
    """A ``DataLoader`` over an ``EpochBatchSampler`` whose position advances only when a
    batch is handed to the consumer, so batches that workers prefetched but training never
    used are not counted. Lightning saves ``state_dict()`` in checkpoints (it does so for any
    train loader with ``state_dict``/``load_state_dict``) and restores it on ``--ckpt_path``.

    With ``counts`` (``MixtureCounts``), each batch handed out is also counted there, and the
    counts are saved and restored with the position, so they resume exactly as the data does.

    It is deliberately not a ``DataLoader`` subclass: Lightning would replace the sampler of a
    ``DataLoader`` under several ranks, and this one already covers ranks.
    """

    def __init__(self, loader: DataLoader, counts: MixtureCounts | None = None) -> None:
        if not isinstance(loader.batch_sampler, EpochBatchSampler):
            raise TypeError("ResumableLoader needs a DataLoader with an EpochBatchSampler")
        self.loader = loader
        self.counts = counts
        # the names Lightning reads on loaders: it calls ``sampler.set_epoch`` every epoch
        self.sampler: EpochBatchSampler = loader.batch_sampler
        self.batch_sampler = self.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.sampler.consumed += 1
            if self.counts is not None:
                self.counts.add(batch)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.sampler.state_dict()
        if self.counts is not None:
            state["counts"] = self.counts.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        if self.counts is not None and "counts" in state:
            self.counts.load_state_dict(state["counts"])
