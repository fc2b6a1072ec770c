"""Token counts for batching by token budget, without decoding images.

A sample's length is its text's tokens plus its images' tokens, and an image's tokens follow
from its size alone (through the splitter's ``TileLayout``). So sources that can give a
sample's ``outline`` (turns and image sizes, e.g. from the image files' headers) are counted
exactly without reading a pixel, the text of many samples tokenised in one batch. Counts of a
file source are cached beside its record index, keyed by everything they depend on.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

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


def token_counts(samples: Dataset, encoder: SampleEncoder, indices: np.ndarray) -> np.ndarray:
    """``len(encoder(samples[i])["input_ids"])`` for each ``i`` of ``indices``, or ``BAD``.

    Reads ``samples.outline(i)`` when the source has it, else the sample itself (decoding its
    images, but not splitting them). The counts of a source with a cached record index
    (``samples.index``) are cached with it, so a sample is counted once per file version and
    encoder (``SampleEncoder.fingerprint``).
    """
    indices = np.asarray(indices, dtype=np.int64)
    index = getattr(samples, "index", None)
    if not isinstance(index, RecordIndex):
        return _count(samples, encoder, indices)

    def update(cached: np.ndarray | None) -> np.ndarray:
        fresh = cached is None or cached.shape != (len(samples),)
        counts = np.full(len(samples), UNCOUNTED, np.int32) if fresh else cached.copy()
        missing = np.unique(indices[counts[indices] == UNCOUNTED])
        counts[missing] = _count(samples, encoder, missing)
        return counts

    return index.cached_array(f"tokens-{encoder.fingerprint()}", update)[indices].astype(np.int64)


def _count(samples: Dataset, encoder: SampleEncoder, indices: np.ndarray) -> np.ndarray:
    outline = getattr(samples, "outline", None) or (lambda i: SampleOutline.of(samples[i]))
    counts = np.full(len(indices), BAD, np.int64)
    for first in range(0, len(indices), BATCH):
        positions, outlines = [], []
        for position in range(first, min(first + BATCH, len(indices))):
            try:
                outlines.append(outline(int(indices[position])))
            except BadSampleError:
                continue
            positions.append(position)
        if outlines:
            counts[positions] = encoder.token_counts(outlines)
    return counts
