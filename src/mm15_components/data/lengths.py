"""Token counts for batching by token budget, without decoding images.

A sample's length is its text's tokens plus its images' tokens, and an image's tokens follow
from its size alone (through the splitter's ``TileLayout``). So sources that can give a
sample's ``outline`` (turns and image sizes, e.g. from the image files' headers) are counted
exactly without reading a pixel, the text of many samples tokenised in one batch. Counts of a
file source are cached beside its record index, keyed by everything they depend on.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, Dataset

from mm15_components.data.collate import SampleEncoder
from mm15_components.data.formats import BadSampleError
from mm15_components.data.index import RecordIndex
from mm15_components.data.schema import SampleOutline

BAD = -1
"""The count of a sample whose outline raised ``BadSampleError``: reading it will raise too."""
UNCOUNTED = -2
"""In a cached array: not counted yet."""
BATCH = 512
"""Samples whose text is tokenised in one call."""


def token_counts(
    samples: Dataset, encoder: SampleEncoder, indices: np.ndarray, workers: int = 0
) -> np.ndarray:
    """``len(encoder(samples[i])["input_ids"])`` for each ``i`` of ``indices``, or ``BAD``.

    Reads ``samples.outline(i)`` when the source has it, else the sample itself (decoding its
    images, but not splitting them), in ``workers`` DataLoader worker processes (0: in this
    one). The counts of a source with a cached record index (``samples.index``) are cached
    with it, so a sample is counted once per file version and encoder
    (``SampleEncoder.fingerprint``).
    """
    indices = np.asarray(indices, dtype=np.int64)
    index = getattr(samples, "index", None)
    if not isinstance(index, RecordIndex):
        return _count(samples, encoder, indices, workers)

    def update(cached: np.ndarray | None) -> np.ndarray:
        fresh = cached is None or cached.shape != (len(samples),)
        counts = np.full(len(samples), UNCOUNTED, np.int32) if fresh else cached.copy()
        missing = np.unique(indices[counts[indices] == UNCOUNTED])
        counts[missing] = _count(samples, encoder, missing, workers)
        return counts

    return index.cached_array(f"tokens-{encoder.fingerprint()}", update)[indices].astype(np.int64)


def _count(
    samples: Dataset, encoder: SampleEncoder, indices: np.ndarray, workers: int
) -> np.ndarray:
    batches = _CountBatches(samples, encoder, indices)
    if workers and len(batches) > 1:
        loader = DataLoader(batches, batch_size=None, num_workers=min(workers, len(batches)))
        return np.concatenate([counts.numpy() for counts in loader])
    return np.concatenate([batches[k] for k in range(len(batches))] or [np.zeros(0, np.int64)])


class _CountBatches(Dataset):
    """Item ``k``: the counts of the ``k``-th ``BATCH`` of ``indices``."""

    def __init__(self, samples: Dataset, encoder: SampleEncoder, indices: np.ndarray) -> None:
        self.samples, self.encoder, self.indices = samples, encoder, indices

    def __len__(self) -> int:
        return -(-len(self.indices) // BATCH)

    def __getitem__(self, k: int) -> np.ndarray:
        outline = getattr(self.samples, "outline", None)
        batch = self.indices[k * BATCH : (k + 1) * BATCH].tolist()
        counts = np.full(len(batch), BAD, np.int64)
        positions, outlines = [], []
        for position, index in enumerate(batch):
            try:
                outlines.append(
                    outline(index) if outline else SampleOutline.of(self.samples[index])
                )
            except BadSampleError:
                continue
            positions.append(position)
        if outlines:
            counts[positions] = self.encoder.token_counts(outlines)
        return counts
