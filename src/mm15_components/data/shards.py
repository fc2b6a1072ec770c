"""Tar shards (the WebDataset layout) as a map-style source, for corpora that do not fit one
file.

A shard is a plain, uncompressed ``.tar`` file. Each ``.json`` member is one sample: a record
in one of ``formats.FORMATS``, whose image paths name members of the same shard, relative to
the ``.json`` member's folder (``000017.json`` holding ``{"image": "000017.jpg", ...}``, the
image being ``000017.jpg``).

Opening a source reads each shard's member headers once, to count its samples; no record and
no image is read. A shard's member index (names, offsets and sizes) is built when a process
first reads one of its samples, and ``__getitem__`` reads a sample's record and images by
offset. So the source is a map-style dataset like ``JSONSource``: the seeded, resumable,
rank-aware draws of ``MixtureDataset`` work on it unchanged.
"""

from __future__ import annotations

import glob
import io
import os
import posixpath
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from torch.utils.data import Dataset

from mm15_components.data.formats import (
    FORMATS,
    BadSampleError,
    BadSamplePolicy,
    Format,
    JSONSource,
    decode_image,
    load_json,
    parse_record,
)
from mm15_components.data.schema import Sample


@dataclass
class ShardIndex:
    """A shard's members: the ``.json`` members (its samples, in tar order) and every regular
    file's ``(offset, size)`` of data; ``error`` says where the shard was found damaged (the
    members before the damage are indexed)."""

    samples: list[str] = field(default_factory=list)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: BadSampleError | None = None


def index_shard(path: str) -> ShardIndex:
    """The member index of the tar file ``path``, from its headers alone (no data is read).

    Raises:
        ValueError: ``path`` is missing or not an uncompressed tar file.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such shard")
    index = ShardIndex()
    try:
        archive = tarfile.open(path, "r:")
    except tarfile.ReadError as error:
        raise ValueError(f"{path}: not an uncompressed tar file: {error}") from error
    size = os.path.getsize(path)
    with archive:
        try:
            while (member := archive.next()) is not None:
                if member.offset_data + member.size > size:
                    raise tarfile.ReadError(f"the data of {member.name} is cut short")
                if member.isfile():
                    index.members[member.name] = (member.offset_data, member.size)
                    if member.name.endswith(".json"):
                        index.samples.append(member.name)
            # tarfile stops silently where a file cut at a block boundary ends: a whole tar
            # file ends with a zero block
            archive.fileobj.seek(archive.offset)
            if archive.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
                raise tarfile.ReadError("no end-of-archive block")
        except tarfile.TarError as error:
            last = next(reversed(index.members), None)
            after = f"after member {last}" if last else "at its first member"
            index.error = BadSampleError(
                "unreadable_shard", f"{path}: truncated or corrupt {after}: {error}"
            )
    return index


class ShardSource(Dataset):
    """The samples of tar shards in one of ``FORMATS`` (see the module docstring).

    Args:
        shards: a shard's path, a glob (``/data/cc3m/shard-*.tar``), or a list of them; the
            shards matched by a glob are taken in sorted order.
        format: the records' schema.
        policy: what to do with a damaged shard (raise, or skip and count once per shard,
            keeping the samples before the damage). Bad samples (malformed JSON or record,
            missing or unreadable image) are raised from ``__getitem__``, for
            ``MixtureDataset``'s policy, as with ``JSONSource``.

    Raises:
        ValueError: a pattern matches no file, a shard is not an uncompressed tar file, or
            the shards hold no sample.
        BadSampleError: under the ``raise`` policy, for a truncated or corrupt shard
            (``unreadable_shard``), naming the shard and the last member read.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        format: Format = "conversation",
        policy: BadSamplePolicy | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {FORMATS}")
        self.shards: list[str] = []
        for pattern in [shards] if isinstance(shards, str) else shards:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not matches:
                raise ValueError(f"{pattern}: no shard matches")
            self.shards.extend(matches)
        self.format = format
        policy = policy or BadSamplePolicy("raise")
        counts = []
        for shard in self.shards:
            index = index_shard(shard)
            if index.error is not None:
                policy.handle(index.error)
            counts.append(len(index.samples))
        self.ends = np.cumsum(counts)
        if not len(self):
            raise ValueError(f"{shards}: the shards hold no .json member")
        self._indexes: dict[int, ShardIndex] = {}

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def index(self, shard: int) -> ShardIndex:
        """Shard ``shard``'s member index, built on first use in this process."""
        if shard not in self._indexes:
            index = index_shard(self.shards[shard])
            start = self.ends[shard - 1] if shard else 0
            if len(index.samples) != self.ends[shard] - start:
                raise ValueError(f"{self.shards[shard]}: the shard changed since it was opened")
            self._indexes[shard] = index
        return self._indexes[shard]

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        shard = int(np.searchsorted(self.ends, index, side="right"))
        members = self.index(shard)
        name = members.samples[index - (int(self.ends[shard - 1]) if shard else 0)]
        where = f"{self.shards[shard]}: {name}"
        with open(self.shards[shard], "rb") as file:
            text = read(file, members.members[name]).decode("utf-8", errors="replace")
            record = load_json(text, where)
            turns, paths = parse_record(record, self.format, where)
            images = []
            for path in paths:
                member = posixpath.normpath(posixpath.join(posixpath.dirname(name), path))
                if member not in members.members:
                    raise BadSampleError(
                        "missing_file", f"{where}: image member {member} not in the shard"
                    )
                data = io.BytesIO(read(file, members.members[member]))
                images.append(decode_image(data, where, member))
        return Sample(turns=turns, images=images, id=str(record.get("id", where)))


def read(file: BinaryIO, span: tuple[int, int]) -> bytes:
    """The ``(offset, size)`` bytes of ``file``."""
    offset, size = span
    file.seek(offset)
    return file.read(size)


def open_source(
    path: str,
    format: Format = "conversation",
    image_root: str | None = None,
    policy: BadSamplePolicy | None = None,
) -> Dataset:
    """The source a mixture's ``Source`` names: a ``ShardSource`` when ``path`` names ``.tar``
    shards (a path or a glob), else a ``JSONSource``."""
    if path.endswith(".tar"):
        if image_root is not None:
            raise ValueError(f"{path}: images are members of the shards; image_root must be unset")
        return ShardSource(path, format, policy)
    return JSONSource(path, format, image_root, policy)
