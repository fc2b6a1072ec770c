"""Batches by token budget: as many samples per batch as fit ``max_tokens`` padded tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mm15_components.data.sampler import EpochBatchSampler


def token_budget_batches(lengths: Sequence[int], max_tokens: int, seed: int = 0) -> list[list[int]]:
    """Group sample indices so each batch's padded size (``len(batch) * longest``) is at most
    ``max_tokens``.

    Samples are sorted by length (ties broken by a seeded shuffle) and cut greedily, so a
    batch holds samples of similar length and pads little. Raises naming the first sample
    that alone is over the budget.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    over = np.flatnonzero(lengths > max_tokens)
    if len(over):
        index = int(over[0])
        raise ValueError(
            f"sample {index} has {lengths[index]} tokens, more than max_tokens={max_tokens}"
        )
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).numpy()
    order = shuffled[np.argsort(lengths[shuffled], kind="stable")]  # ties stay shuffled
    batches: list[list[int]] = []
    batch: list[int] = []
    for index, length in zip(order.tolist(), lengths[order].tolist(), strict=True):
        # sorted ascending, so this sample is the longest of the batch it joins
        if batch and (len(batch) + 1) * length > max_tokens:
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


class TokenBudgetBatchSampler(EpochBatchSampler):
    """Batches of at most ``max_tokens`` padded tokens (``token_budget_batches``), formed once
    from the seed; each epoch visits them in a new seeded order. Fixed batches keep the number
    of batches per epoch constant (Lightning counts it once) at the cost of the same samples
    sharing a batch every epoch. Resumes mid-epoch and covers ranks like every
    ``EpochBatchSampler``.

    Args:
        lengths: every sample's token count (image tokens included).
        max_tokens: the budget of padded tokens per batch (per rank).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(shuffle, seed, num_replicas, rank)
        self.max_tokens = max_tokens
        self.batches = token_budget_batches(lengths, max_tokens, seed)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if not self.shuffle:
            return self.batches
        order = torch.randperm(len(self.batches), generator=self.generator(epoch))
        return [self.batches[i] for i in order.tolist()]
