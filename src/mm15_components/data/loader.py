"""How a data module batches its encoded samples: the ``loader:`` group of its arguments."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from mm15_components.data.batching import TokenBudgetBatchSampler
from mm15_components.data.collate import collate
from mm15_components.data.mixture import MixtureCounts, collate_with_categories
from mm15_components.data.packing import collate_packed
from mm15_components.data.sampler import EpochBatchSampler, ResumableBatchSampler, ResumableLoader


@dataclass(frozen=True)
class Loader:
    """The ``loader:`` group of a data module's arguments.

    Args:
        batch_size: samples per batch (per rank).
        num_workers: DataLoader worker processes.
        shuffle: shuffle training samples each epoch (validation keeps its order).
        max_tokens: batch by token budget instead of ``batch_size``: as many samples as fit
            this many padded tokens per batch (``TokenBudgetBatchSampler``; each sample's
            length is counted once, at setup, from its text and image sizes). None:
            ``batch_size`` samples.
        pack: pack each training batch's samples into rows of at most this many tokens, each
            sample attending only to itself (``data.packing``). None: one sample per row.
    """

    batch_size: int = 32
    num_workers: int = 0
    shuffle: bool = True
    max_tokens: int | None = None
    pack: int | None = None

    def build(
        self,
        dataset: Dataset,
        pad_token_id: int,
        seed: int,
        *,
        train: bool,
        trainer: L.Trainer | None = None,
        counts: MixtureCounts | None = None,
    ) -> ResumableLoader:
        """A loader over ``dataset`` (encoded items) that resumes exactly: our own batch
        sampler, also under several ranks (Lightning's would always shuffle training data),
        whose position is saved in checkpoints. ``train``: shuffled and packed as configured.
        ``counts``: the items carry a ``category`` and the bad samples ``skipped`` to make
        them (``MixtureDataset``); the loader counts both, and keeps the counts with its
        position."""
        ranks = {"num_replicas": 1, "rank": 0}
        if trainer is not None and trainer.world_size > 1:
            ranks = trainer.strategy.distributed_sampler_kwargs
        shuffle = train and self.shuffle
        batches: EpochBatchSampler
        if self.max_tokens is None:
            batches = ResumableBatchSampler(len(dataset), self.batch_size, shuffle, seed, **ranks)
        else:
            batches = TokenBudgetBatchSampler(
                dataset.lengths(), self.max_tokens, shuffle, seed, **ranks
            )
        collate_fn: Any = partial(collate, pad_token_id=pad_token_id)
        if train and self.pack is not None:
            collate_fn = partial(collate_packed, pad_token_id=pad_token_id, row_length=self.pack)
        if counts is not None:
            collate_fn = partial(collate_with_categories, collate_fn=collate_fn)
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
        )
        return ResumableLoader(loader, counts)


class LoadsEncodedSets:
    """``train_dataloader`` and ``val_dataloader`` of a data module whose ``setup`` builds
    ``train_set`` and ``val_set`` (encoded items), through its ``loader`` group."""

    loader: Loader
    seed: int
    tokenizer: PreTrainedTokenizerBase
    train_set: Dataset
    val_set: Dataset
    trainer: L.Trainer | None

    def train_dataloader(self) -> ResumableLoader:
        return self._build(self.train_set, train=True)

    def val_dataloader(self) -> ResumableLoader:
        return self._build(self.val_set, train=False)

    def _build(self, dataset: Dataset, train: bool) -> ResumableLoader:
        pad = self.tokenizer.pad_token_id
        return self.loader.build(dataset, pad, self.seed, train=train, trainer=self.trainer)
