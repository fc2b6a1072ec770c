"""Readers for data files: LLaVA-style conversations, caption pairs, interleaved documents and
plain text, in ``.json`` (a list of records) or ``.jsonl`` (one record per line).

A file source keeps only an index of where its records are (``data.index``) and parses a
record when it is read, so opening a file of millions of records takes seconds and little
memory; images are opened only in ``__getitem__``. Every problem with a record or an image is
a ``BadSampleError`` of one kind (``BAD_KINDS``) whose message names the file and line; a
``BadSamplePolicy`` raises it or skips the sample and counts it.

Schemas (paths relative to the image root):

- ``conversation``: ``{"id", "image": path | "images": [paths], "conversations": [{"from":
  "human" | "gpt" | "user" | "assistant", "value": "...<image>..."}]}``, one ``<image>``
  placeholder per image; no image key for text-only conversations. Loss on assistant turns.
- ``caption``: ``{"id", "image": path, "caption": text}``; loss on the caption.
- ``interleaved``: ``{"id", "images": [path | null, ...], "texts": [text | null, ...]}``, two
  lists of the same length where slot ``k`` holds an image or a text (the other is null);
  the document is read in slot order and the loss is on the text.
- ``text``: ``{"id", "text": text}``; loss on the text.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Literal

from PIL import Image
from torch.utils.data import Dataset

from mm15_components.data import images
from mm15_components.data.images import MAX_PIXELS
from mm15_components.data.index import RecordIndex
from mm15_components.data.schema import Sample, SampleOutline, Turn
from mm15_components.language.tokenizer import IMAGE_TOKEN

Format = Literal["conversation", "caption", "interleaved", "text"]
FORMATS: tuple[str, ...] = ("conversation", "caption", "interleaved", "text")
DOCUMENT_FORMATS = ("caption", "interleaved", "text")
"""Pre-training formats: the sample is one document, read without a chat template."""

OnBadSample = Literal["raise", "skip"]
BAD_KINDS = (
    "malformed_json",
    "malformed_record",
    "missing_file",
    "unreadable_image",
    "image_too_large",
    "unreadable_video",
    "video_too_short",
    "empty_answer",
    "placeholder_mismatch",
    "no_assistant_turn",
    "too_long",
)
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
"""Speaker names of LLaVA-style files -> ``Turn`` roles."""


class BadSampleError(ValueError):
    """A sample that cannot be used, of one of ``BAD_KINDS``; the message says where."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in BAD_KINDS:
            raise ValueError(f"unknown bad-sample kind {kind!r}; choose from {BAD_KINDS}")
        super().__init__(message)
        self.kind = kind


class BadSampleBudgetError(ValueError):
    """Too large a share of a source's samples were bad under ``skip``: the source is wrong
    (an image root, a path), not a few of its samples."""


class BadSamplePolicy:
    """``raise`` re-raises a ``BadSampleError``; ``skip`` counts it per source and per kind,
    warns once per kind and source, and stops (``BadSampleBudgetError``) when a source's
    bad share passes ``max_bad_fraction``. The share is judged once ``judge_after`` of the
    source's samples, or all of a smaller source, have been read (``read``). Counts are per
    process: each DataLoader worker counts and judges its own reads.

    Args:
        mode: ``raise`` or ``skip``.
        max_bad_fraction: the largest share of bad samples a source may have under ``skip``.
        judge_after: reads of a source before its share is judged (or its size, if smaller).
    """

    def __init__(
        self, mode: OnBadSample = "skip", max_bad_fraction: float = 0.1, judge_after: int = 200
    ) -> None:
        if mode not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {mode!r}")
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.mode = mode
        self.max_bad_fraction = max_bad_fraction
        self.judge_after = judge_after
        self.counts: Counter[str] = Counter()
        self.bad: Counter[tuple[str, str]] = Counter()
        self.reads: Counter[str] = Counter()

    def read(self, source: str) -> None:
        """Count one sample of ``source`` read (good or bad)."""
        self.reads[source] += 1

    def handle(
        self, error: BadSampleError, source: str | None = None, size: int | None = None
    ) -> None:
        """Raise ``error``, or count it against ``source`` (of ``size`` samples) and judge
        the source's share of bad samples."""
        if self.mode == "raise":
            raise error
        if not self.bad[source or "", error.kind]:
            warnings.warn(
                f"skipping bad samples of kind {error.kind!r}"
                + (f" in {source}" if source else "")
                + f" (warned once; counted as data/skipped); first: {error}",
                stacklevel=2,
            )
        self.counts[error.kind] += 1
        self.bad[source or "", error.kind] += 1
        if source is None:
            return
        reads = self.reads[source]
        bad = sum(n for (name, _), n in self.bad.items() if name == source)
        judged = reads >= min(self.judge_after, size or self.judge_after)
        if judged and bad > self.max_bad_fraction * reads:
            kinds = ", ".join(
                f"{n} {kind}" for (name, kind), n in sorted(self.bad.items()) if name == source
            )
            raise BadSampleBudgetError(
                f"{source}: {bad} of the {reads} samples read were bad ({kinds}), over the "
                f"limit of {self.max_bad_fraction:.0%} (max_bad_fraction); is the source's "
                f"path or image_root wrong? Last: {error}"
            )

    def summary(self) -> str:
        """The bad samples counted, per source and kind."""
        return "; ".join(
            f"{name or '-'}: {n} {kind}" for (name, kind), n in sorted(self.bad.items())
        )


def read_json_records(path: Path, policy: BadSamplePolicy | None = None) -> list[tuple[Any, str]]:
    """Every record of a (small) ``.jsonl`` or ``.json`` file, parsed now, each with where it is
    (``file:line``, or ``file: record k (line n)``). A record that is not UTF-8 JSON goes to
    ``policy`` (default: raise)."""
    index = RecordIndex.scan(path)
    records = []
    for number in range(len(index)):
        where = record_where(index, number)
        try:
            records.append((decode_record(index.read(number), where), where))
        except BadSampleError as error:
            (policy or BadSamplePolicy("raise")).handle(error)
    return records


def record_where(index: RecordIndex, number: int) -> str:
    """How messages name record ``number`` of an indexed file."""
    if index.path.suffix == ".jsonl":
        return f"{index.path}:{index.line(number)}"
    return f"{index.path}: record {number} (line {index.line(number)})"


def decode_record(data: bytes, where: str) -> Any:
    """A record's UTF-8 JSON bytes parsed; raises ``BadSampleError`` (``malformed_json``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BadSampleError(
            "malformed_json",
            f"{where}: not UTF-8: byte {data[error.start]:#04x} at offset {error.start} "
            f"(line {line} of the record)",
        ) from None
    return load_json(text, where)


def load_json(text: str, where: str) -> Any:
    """``text`` parsed as JSON; raises ``BadSampleError`` (``malformed_json``) naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadSampleError("malformed_json", f"{where}: malformed JSON: {error}") from error


def parse_record(record: Any, format: Format, where: str) -> tuple[list[Turn], list[str]]:
    """A record's turns (placeholders in place) and image paths; raises ``BadSampleError``."""
    if not isinstance(record, dict):
        raise BadSampleError("malformed_record", f"{where}: a record must be a JSON object")
    if format == "conversation":
        turns, images = _conversation(record, where)
    elif format == "caption":
        image, caption = _string(record, "image", where), _string(record, "caption", where)
        turns, images = [Turn("assistant", f"{IMAGE_TOKEN}\n{caption}")], [image]
    elif format == "interleaved":
        turns, images = _interleaved(record, where)
    elif format == "text":
        turns, images = [Turn("assistant", _string(record, "text", where))], []
    else:
        raise ValueError(f"unknown format {format!r}; choose from {FORMATS}")
    placeholders = sum(turn.content.count(IMAGE_TOKEN) for turn in turns)
    if placeholders != len(images):
        raise BadSampleError(
            "placeholder_mismatch",
            f"{where}: the text has {placeholders} {IMAGE_TOKEN} placeholder(s) but the record "
            f"has {len(images)} image(s)",
        )
    return turns, images


def _string(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise BadSampleError("malformed_record", f"{where}: {key!r} must be a non-empty string")
    return value


def _conversation(record: dict, where: str) -> tuple[list[Turn], list[str]]:
    if "image" in record:
        images = [_string(record, "image", where)]
    else:
        images = record.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
            raise BadSampleError("malformed_record", f"{where}: 'images' must list path strings")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise BadSampleError("malformed_record", f"{where}: 'conversations' must be a list")
    turns = []
    for message in conversations:
        if not isinstance(message, dict) or message.get("from") not in ROLES:
            raise BadSampleError(
                "malformed_record", f"{where}: each message needs 'from' in {sorted(ROLES)}"
            )
        if not isinstance(message.get("value"), str):
            raise BadSampleError("malformed_record", f"{where}: each message needs a 'value'")
        turns.append(Turn(ROLES[message["from"]], message["value"]))
    if turns[-1].role != "assistant":
        raise BadSampleError(
            "no_assistant_turn", f"{where}: the conversation must end with an assistant turn"
        )
    check_answers(turns, where)
    return turns, images


def check_answers(turns: list[Turn], where: str) -> None:
    """Raise ``BadSampleError`` (``empty_answer``) for an assistant turn of no text: it would
    train the model to answer with the end token alone."""
    for number, turn in enumerate(turns, 1):
        if turn.role == "assistant" and not turn.content.strip():
            raise BadSampleError("empty_answer", f"{where}: message {number} is an empty answer")


def _interleaved(record: dict, where: str) -> tuple[list[Turn], list[str]]:
    images, texts = record.get("images"), record.get("texts")
    if not (isinstance(images, list) and isinstance(texts, list) and len(images) == len(texts)):
        raise BadSampleError(
            "malformed_record", f"{where}: 'images' and 'texts' must be lists of equal length"
        )
    pieces, paths = [], []
    for image, text in zip(images, texts, strict=True):
        if isinstance(image, str) and image and text is None:
            pieces.append(IMAGE_TOKEN)
            paths.append(image)
        elif isinstance(text, str) and text and image is None:
            pieces.append(text)
        else:
            raise BadSampleError(
                "malformed_record", f"{where}: each slot holds an image or a text, the other null"
            )
    if all(piece == IMAGE_TOKEN for piece in pieces):
        raise BadSampleError("no_assistant_turn", f"{where}: the document has no text")
    return [Turn("assistant", "\n".join(pieces))], paths


def open_image(path: Path, where: str, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """An RGB image (``data.images.load_image``), fully decoded now so a truncated file fails
    here, naming ``where``."""
    if not path.is_file():
        raise BadSampleError("missing_file", f"{where}: image {path} not found")
    return decode_image(path, where, str(path), max_pixels)


def decode_image(
    file: Path | BinaryIO, where: str, name: str, max_pixels: int | None = MAX_PIXELS
) -> Image.Image:
    """The RGB image in ``file`` (a path or a binary stream, ``data.images.load_image``),
    fully decoded now so a truncated one fails here; errors name ``where`` and the image's
    ``name``."""
    try:
        return images.load_image(file, max_pixels)
    except images.ImageTooLarge as error:
        raise BadSampleError("image_too_large", f"{where}: image {name}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadSampleError(
            "unreadable_image", f"{where}: cannot read image {name}: {error}"
        ) from error


def image_size(
    file: Path | BinaryIO, where: str, name: str, max_pixels: int | None = MAX_PIXELS
) -> tuple[int, int]:
    """The ``(height, width)`` of the image in ``file`` (a path or a binary stream) as
    ``decode_image`` gives it, from its header alone (``data.images.image_size``): what token
    counts need of an image. Raises ``BadSampleError`` like ``decode_image``, and for a
    missing file."""
    try:
        return images.image_size(file, max_pixels)
    except (FileNotFoundError, IsADirectoryError):
        raise BadSampleError("missing_file", f"{where}: image {name} not found") from None
    except images.ImageTooLarge as error:
        raise BadSampleError("image_too_large", f"{where}: image {name}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadSampleError(
            "unreadable_image", f"{where}: cannot read image {name}: {error}"
        ) from error


class JSONSource(Dataset):
    """The samples of one ``.json``/``.jsonl`` file in one of ``FORMATS``, read by index: the
    file's record index (``data.index.RecordIndex``) is opened (built and cached the first
    time) and a record is parsed when it is read.

    Args:
        path: the file.
        format: its schema (see the module docstring).
        image_root: the folder image paths are relative to (default: the file's folder).
        index_dir: the folder for the record index (default: beside the file, see
            ``RecordIndex.open``).
        max_image_pixels: images with more pixels are bad samples (``image_too_large``);
            None: no limit but Pillow's.

    Raises:
        ValueError: the file is missing, holds no record, or is a ``.json`` file that is not
            a list of JSON values.
        BadSampleError: from ``__getitem__`` and ``outline``, for a bad record (not UTF-8,
            malformed JSON, wrong fields) or a missing or unreadable image, naming the file
            and line; ``MixtureDataset`` hands it to its policy.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        format: Format = "conversation",
        image_root: str | os.PathLike | None = None,
        index_dir: str | os.PathLike | None = None,
        max_image_pixels: int | None = MAX_PIXELS,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {FORMATS}")
        self.path = Path(path)
        self.format = format
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.index = RecordIndex.open(self.path, index_dir)
        self.max_image_pixels = max_image_pixels
        if not len(self.index):
            raise ValueError(f"{self.path}: no records")

    def __len__(self) -> int:
        return len(self.index)

    def where(self, index: int) -> str:
        """How messages name sample ``index``: the file and line."""
        return record_where(self.index, index)

    def read(self, index: int) -> tuple[str, str, list[Turn], list[Path]]:
        """Sample ``index``'s ``where``, id, turns and image paths."""
        where = self.where(index)
        record = decode_record(self.index.read(index), where)
        turns, images = parse_record(record, self.format, where)
        return where, str(record.get("id", where)), turns, [self.image_root / p for p in images]

    def __getitem__(self, index: int) -> Sample:
        where, sample_id, turns, paths = self.read(index)
        pictures = [open_image(path, where, self.max_image_pixels) for path in paths]
        return Sample(turns=turns, images=pictures, id=sample_id)

    def outline(self, index: int) -> SampleOutline:
        """Sample ``index``'s turns and image sizes, from the images' headers (no decoding)."""
        where, _, turns, paths = self.read(index)
        sizes = [image_size(path, where, str(path), self.max_image_pixels) for path in paths]
        return SampleOutline(turns, sizes)


def is_record_file(path: str) -> bool:
    """Whether a source's ``path`` names a ``.json``/``.jsonl`` file (else: a litdata dataset)."""
    return path.endswith((".json", ".jsonl"))


def open_source(
    path: str,
    format: Format = "conversation",
    image_root: str | None = None,
    index_dir: str | None = None,
    max_image_pixels: int | None = MAX_PIXELS,
) -> Dataset:
    """The source a mixture's ``Source`` names: a ``JSONSource`` for a ``.json``/``.jsonl``
    file, else a ``StreamingSource`` (a folder or URL of litdata chunks, ``data.stream``)."""
    if is_record_file(path):
        return JSONSource(path, format, image_root, index_dir, max_image_pixels)
    if image_root is not None:
        raise ValueError(f"{path}: images are stored in the chunks; image_root must be unset")
    from mm15_components.data.stream import StreamingSource

    return StreamingSource(path, format)
