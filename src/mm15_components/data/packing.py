"""Sequence packing: several samples per row, each attending only to itself.

A packed batch has ``position_ids`` that restart at 0 at every sample and no
``attention_mask``: transformers then reads the sample boundaries from the position ids
(its packed-sequence format) and builds a block-diagonal causal mask for ``eager`` and
``sdpa`` attention, or runs variable-length kernels for flash attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mm15_components.data.schema import EncodedSample, PackedBatch
from mm15_components.labels import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """First fit: each sample, in order, goes to the first row with room for it."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index, length in enumerate(lengths):
        row = next((r for r, free in enumerate(room) if free >= length), None)
        if row is None:
            rows.append([])
            room.append(row_length)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= length
    return rows


def collate_packed(
    items: Sequence[EncodedSample], pad_token_id: int, row_length: int
) -> PackedBatch:
    """Pack encoded samples into rows of at most ``row_length`` tokens (training batches:
    no prompt fields). Samples and their images keep one order, row by row, so the model
    fills image placeholders with the right images."""
    lengths = [len(it["input_ids"]) for it in items]
    for it, length in zip(items, lengths, strict=True):
        if length > row_length:
            raise ValueError(
                f"sample {it['id']!r} has {length} tokens, more than the packed row "
                f"length {row_length}"
            )
    rows = pack_rows(lengths, row_length)
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id)
    labels = torch.full((len(rows), width), IGNORE_INDEX)
    position_ids = torch.zeros(len(rows), width, dtype=torch.long)
    order = [i for row in rows for i in row]
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = lengths[i]
            input_ids[r, start : start + n] = items[i]["input_ids"]
            labels[r, start : start + n] = items[i]["labels"]
            labels[r, start] = IGNORE_INDEX  # never a target of the previous sample's end
            position_ids[r, start : start + n] = torch.arange(n)
            start += n
        position_ids[r, start:] = torch.arange(width - start)  # padding: a block of its own
    return {
        "ids": [items[i]["id"] for i in order],
        "input_ids": input_ids,
        "attention_mask": None,
        "position_ids": position_ids,
        "labels": labels,
        "pixel_values": torch.cat([items[i]["pixel_values"] for i in order]),
        "tiles_per_sample": torch.tensor([len(items[i]["pixel_values"]) for i in order]),
    }
