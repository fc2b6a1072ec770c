"""Sources beyond one disk: records and their images in litdata chunks (the ``stream`` extra),
read from a local folder or an object store (``s3://``, ``gs://``, ``azure://``...).

``optimize`` (``mm15 data optimize``) writes the samples of a ``.json``/``.jsonl`` file with
their image files into litdata chunks, one item per sample:

- ``record``: the record's JSON text, as in the file;
- ``meta``: JSON ``{"where": "file:line", "images": [[name, height, width, end], ...]}``, the
  sizes read from the image headers (so token counts need no image) and ``end`` the offset
  where each image's bytes end in ``images``;
- ``images``: the image files' bytes, one after the other, as they were (no re-encoding).

``StreamingSource`` reads item ``i`` by index (litdata's ``StreamingDataset`` random access:
a local folder's chunks are memory-mapped, a remote item's bytes are fetched alone). So it is
a map-style source like ``JSONSource``: the mixture's seeded, rank-aware draws, its
bad-sample policy and exact resume from the loader position saved in checkpoints work on it
unchanged, with no loader state of litdata's own.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mm15_components.data.formats import (
    FORMATS,
    BadSampleError,
    Format,
    JSONSource,
    OnBadSample,
    decode_image,
    image_size,
    load_json,
    parse_record,
)
from mm15_components.data.schema import Sample, SampleOutline

INSTALL_HINT = "streaming sources need litdata: pip install 'mm15-components[stream]'"


def _litdata() -> Any:
    try:
        import litdata
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return litdata


def optimize(
    input: str,
    output_dir: str,
    format: Format = "conversation",
    image_root: str | None = None,
    index_dir: str | None = None,
    chunk_bytes: str = "64MB",
    num_workers: int = 1,
    on_bad_sample: OnBadSample = "raise",
) -> int:
    """Write the samples of a ``.json``/``.jsonl`` file and their images into litdata chunks.

    Args:
        input: the ``.json``/``.jsonl`` file (one of ``FORMATS``).
        output_dir: the folder or object-store URL (``s3://bucket/name``) to write; it must
            not hold a dataset already.
        format: the records' schema.
        image_root: the folder image paths are relative to (default: the file's folder).
        index_dir: where the file's record index is cached (default: beside it).
        chunk_bytes: the size of a chunk (e.g. ``64MB``).
        num_workers: processes that read and write.
        on_bad_sample: ``raise`` stops at the first bad record or image (missing, or with an
            unreadable header), naming the file and line; ``skip`` leaves it out and prints
            its file and line.

    Returns:
        The number of samples written.
    """
    if on_bad_sample not in ("raise", "skip"):
        raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
    litdata = _litdata()
    source = JSONSource(input, format, image_root, index_dir)
    litdata.optimize(
        fn=_ChunkItem(source, on_bad_sample),
        inputs=list(range(len(source))),
        output_dir=output_dir,
        chunk_bytes=chunk_bytes,
        num_workers=num_workers,
        # forked workers start at once; spawned ones would import torch again
        start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
    )
    written = len(StreamingSource(output_dir, format))
    message = f"{output_dir}: {written} samples of {input}"
    if written < len(source):
        message += f"; {len(source) - written} bad ones left out (named above)"
    print(message)
    return written


class _ChunkItem:
    """The chunk item of one sample of ``source`` (see the module docstring); None skips it."""

    def __init__(self, source: JSONSource, on_bad_sample: OnBadSample) -> None:
        self.source = source
        self.on_bad_sample = on_bad_sample

    def __call__(self, index: int) -> dict[str, Any] | None:
        try:
            return self.item(index)
        except BadSampleError as error:
            if self.on_bad_sample == "raise":
                raise
            # printed, not warned: the warning filters of a forked worker may hide it
            print(f"left out: {error}", file=sys.stderr, flush=True)
            return None

    def item(self, index: int) -> dict[str, Any]:
        where, _, _, paths = self.source.read(index)
        images, meta = bytearray(), []
        for path in paths:
            height, width = image_size(path, where, str(path))
            images += path.read_bytes()
            meta.append([path.name, height, width, len(images)])
        return {
            "record": self.source.index.read(index).decode("utf-8"),
            "meta": json.dumps({"where": where, "images": meta}),
            "images": bytes(images),
        }


class StreamingSource(Dataset):
    """The samples of a litdata dataset written by ``optimize``, read by index.

    Args:
        input_dir: the folder or object-store URL of the chunks.
        format: the records' schema.
        cache_dir: where litdata keeps what it downloads (default: litdata's).

    Raises:
        ImportError: litdata is not installed.
        BadSampleError: from ``__getitem__`` and ``outline``, for a bad record or an
            unreadable image, naming the dataset, the item and where the record came from.
    """

    def __init__(
        self, input_dir: str, format: Format = "conversation", cache_dir: str | None = None
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {FORMATS}")
        if "://" not in input_dir and not (Path(input_dir) / "index.json").is_file():
            raise ValueError(
                f"{input_dir}: not a .json/.jsonl file, nor a litdata dataset (no index.json)"
            )
        self.input_dir = input_dir
        self.format = format
        self.dataset = _litdata().StreamingDataset(input_dir, cache_dir=cache_dir)
        self.size = sum(end - start for start, end in self.dataset.region_of_interest)

    def __len__(self) -> int:
        return self.size

    def read(self, index: int) -> tuple[str, Any, dict[str, Any], bytes]:
        """Item ``index``'s ``where``, parsed record, meta and image bytes."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        item = self.dataset[index]
        meta = json.loads(item["meta"])
        where = f"{self.input_dir}: item {index} ({meta['where']})"
        return where, load_json(item["record"], where), meta, item["images"]

    def where(self, index: int) -> str:
        return self.read(index)[0]

    def __getitem__(self, index: int) -> Sample:
        where, record, meta, data = self.read(index)
        turns, _ = parse_record(record, self.format, where)
        images, start = [], 0
        for name, _, _, end in meta["images"]:
            images.append(decode_image(io.BytesIO(data[start:end]), where, name))
            start = end
        return Sample(turns=turns, images=images, id=str(record.get("id", where)))

    def outline(self, index: int) -> SampleOutline:
        """Sample ``index``'s turns and image sizes (stored in the item; no image decoded)."""
        where, record, meta, _ = self.read(index)
        turns, _ = parse_record(record, self.format, where)
        return SampleOutline(turns, [(height, width) for _, height, width, _ in meta["images"]])


def optimize_command(args: list[str]) -> None:
    """``mm15 data optimize INPUT OUTPUT_DIR``: a ``.json``/``.jsonl`` file and its images
    into litdata chunks, for ``path: OUTPUT_DIR`` in a mixture's sources."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="mm15 data optimize", description=optimize_command.__doc__)
    parser.add_function_arguments(optimize, as_positional=True)
    optimize(**parser.parse_args(args).as_dict())
