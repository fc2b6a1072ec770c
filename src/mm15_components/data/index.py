"""Where each record of a JSON/JSONL file is: byte offsets in a numpy array, so a source of
millions of records opens in a second and costs 24 bytes a record, shared by every process.

A ``.jsonl`` file holds a record per line (blank lines are skipped); a ``.json`` file holds a
list of records, each spanning any number of lines. The index holds, per record, its byte
span ``[start, end)`` and the line it starts on (for messages), and nothing else: a record is
parsed when it is read. The span is found without parsing for ``.jsonl`` (a newline scan in
numpy); a ``.json`` list is walked once with the standard JSON decoder over the file's bytes
read as Latin-1, one character per byte, so positions are byte offsets whatever the text's
encoding.

``RecordIndex.open`` caches the index in a folder (``<file>.mm15-index/`` beside the file, or
under ``index_dir``) and memory-maps it: every rank and DataLoader worker reads the same
pages, and nothing is copied on write after a fork. The cache is keyed by the file's size,
modification time and a hash of its first and last 64 KiB; a file that changed gets a new
index, and a file changed under an index in use raises when a record is read.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import re
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

VERSION = 1
"""Bumped when the layout of the cache changes; older caches are rebuilt."""
EDGE_BYTES = 1 << 16
"""Bytes hashed at each end of a file to tell it from another of the same size and time."""
BLOCK_BYTES = 1 << 24
"""Bytes scanned at a time while building an index (bounds the memory a build takes)."""
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BOM = b"\xef\xbb\xbf"


class RecordIndex:
    """The byte span and first line of every record of one ``.json``/``.jsonl`` file.

    Build with ``scan`` (in memory) or ``open`` (cached and memory-mapped). ``read(i)`` returns
    record ``i``'s bytes and checks that the file is still the one indexed.

    Args:
        path: the file.
        spans: ``[records, 3]`` int64: start and end byte offsets, and the 1-based line the
            record starts on.
        key: identifies the file's version (size, modification time, edge hash).
        folder: the cache folder, if the index is cached (derived arrays go there).
    """

    def __init__(self, path: Path, spans: np.ndarray, key: str, folder: Path | None = None):
        self.path = path
        self.spans = spans
        self.key = key
        self.folder = folder
        self.stat = file_stat(path)
        self._descriptor: int | None = None

    @classmethod
    def scan(cls, path: str | os.PathLike) -> RecordIndex:
        """The index of ``path``, built now and not cached (for small files)."""
        path = Path(path)
        return cls(path, scan_records(path), file_key(path))

    @classmethod
    def open(
        cls, path: str | os.PathLike, index_dir: str | os.PathLike | None = None
    ) -> RecordIndex:
        """The cached index of ``path``, built and cached first if missing or stale.

        Args:
            path: a ``.json`` or ``.jsonl`` file.
            index_dir: the folder for caches; None: beside the file, or, when its folder is
                not writable, under ``$XDG_CACHE_HOME/mm15_components`` (``~/.cache``).
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        folder = cache_folder(path, index_dir)
        key = file_key(path)
        spans = _load(folder, key)
        if spans is None:
            spans = scan_records(path)
            _store(folder, key, spans, path)
            spans = _load(folder, key)
            if spans is None:
                raise RuntimeError(f"{folder}: the index just written cannot be read back")
        return cls(path, spans, key, folder)

    def __len__(self) -> int:
        return len(self.spans)

    def line(self, index: int) -> int:
        """The 1-based line record ``index`` starts on."""
        return int(self.spans[index, 2])

    def read(self, index: int) -> bytes:
        """Record ``index``'s bytes.

        Raises:
            ValueError: the file changed since it was indexed (its records may have moved).
        """
        start, end, _ = (int(v) for v in self.spans[index])
        if self._descriptor is None:  # kept open for the process (and the ones it forks)
            self._descriptor = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._descriptor)
        now = os.fstat(self._descriptor)
        if (now.st_size, now.st_mtime_ns) != self.stat:
            raise ValueError(
                f"{self.path} changed after it was indexed (size and modification time "
                f"{self.stat} -> {(now.st_size, now.st_mtime_ns)}); restart to index it again"
            )
        return os.pread(self._descriptor, end - start, start)

    def cached_array(
        self, name: str, compute: Callable[[np.ndarray | None], np.ndarray]
    ) -> np.ndarray:
        """An array derived from this version of the file, cached beside the index.

        ``compute(previous)`` gets the array cached under ``name`` (None if none) and returns
        the array to keep; it is stored when it differs from the previous one. Without a cache
        folder ``compute(None)`` is returned.
        """
        if self.folder is None:
            return compute(None)
        path = self.folder / f"{name}-{self.key}.npy"
        previous = None
        if path.is_file():
            try:
                previous = np.load(path)
            except (OSError, ValueError):
                previous = None
        array = compute(previous)
        if previous is None or not np.array_equal(array, previous):
            _write_atomic(path, lambda file: np.save(file, array))
        return array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_descriptor"] = None  # a spawned process opens the file itself
        if self.folder is not None:
            state["spans"] = None  # a spawned process maps the cached spans again
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.spans is None:
            self.spans = _load(self.folder, self.key)
            if self.spans is None:
                raise ValueError(f"{self.folder}: the index of {self.path} is gone or changed")


def file_stat(path: Path) -> tuple[int, int]:
    """``(size, modification time in ns)`` of ``path``."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def file_key(path: Path) -> str:
    """A short key of the file's version: its size, modification time and the hash of its
    first and last ``EDGE_BYTES``."""
    size, mtime = file_stat(path)
    digest = hashlib.sha1(f"{VERSION}:{size}:{mtime}:".encode())
    with open(path, "rb") as file:
        digest.update(file.read(EDGE_BYTES))
        file.seek(max(0, size - EDGE_BYTES))
        digest.update(file.read(EDGE_BYTES))
    return digest.hexdigest()[:16]


def cache_folder(path: Path, index_dir: str | os.PathLike | None) -> Path:
    """Where the index of ``path`` is cached (see ``RecordIndex.open``)."""
    if index_dir is None and os.access(path.parent, os.W_OK):
        return path.with_name(path.name + ".mm15-index")
    if index_dir is None:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        index_dir = Path(cache) / "mm15_components" / "index"
    name = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    return Path(index_dir) / f"{path.name}-{name}"


def _load(folder: Path, key: str) -> np.ndarray | None:
    """The cached spans if they index the file version ``key``, else None."""
    try:
        meta = json.loads((folder / "index.json").read_text())
        if meta.get("version") != VERSION or meta.get("key") != key:
            return None
        spans = np.load(folder / f"spans-{key}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if spans.shape != (meta["records"], 3) or spans.dtype != np.int64:
        return None
    return spans


def _store(folder: Path, key: str, spans: np.ndarray, path: Path) -> None:
    """Cache ``spans`` under ``key``, removing the arrays of older versions of the file."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npy"):
        if not old.stem.endswith(key):
            old.unlink(missing_ok=True)
    _write_atomic(folder / f"spans-{key}.npy", lambda file: np.save(file, spans))
    size, mtime = file_stat(path)
    meta = {"version": VERSION, "key": key, "file": path.name, "size": size, "mtime_ns": mtime}
    meta["records"] = len(spans)
    _write_atomic(folder / "index.json", lambda file: file.write(json.dumps(meta).encode()))


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in its folder, so readers see it whole or not."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def scan_records(path: Path) -> np.ndarray:
    """The ``[records, 3]`` spans of ``path`` (see ``RecordIndex``).

    Raises:
        ValueError: the file is missing, not ``.json``/``.jsonl``, or a ``.json`` file is not
            a list of JSON values (naming the line).
    """
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return _scan_lines(path)
    if path.suffix == ".json":
        return _scan_list(path)
    raise ValueError(f"{path}: expected a .json or .jsonl file")


def _scan_lines(path: Path) -> np.ndarray:
    """One span per non-blank line, read a block at a time (memory: the block and the
    arrays)."""
    starts, firsts = [], []  # where each line starts, and its first byte
    offset, line_starts_block = 0, True
    with open(path, "rb") as file:
        while block := file.read(BLOCK_BYTES):
            data = np.frombuffer(block, dtype=np.uint8)
            inside = np.flatnonzero(data == 10) + 1
            if line_starts_block:
                inside = np.concatenate([[0], inside])
            line_starts_block = data[-1] == 10
            inside = inside[inside < len(data)]
            starts.append(inside + offset)
            firsts.append(data[inside])
            offset += len(data)
    if not offset:
        return np.zeros((0, 3), dtype=np.int64)
    starts, firsts = np.concatenate(starts), np.concatenate(firsts)
    # a line ends at the next one's newline, the last one at the end of the file
    ends = np.append(starts[1:] - 1, offset - 1 if line_starts_block else offset)
    lines = np.arange(1, len(starts) + 1)
    if firsts[0] == _BOM[0]:
        with open(path, "rb") as file:
            starts[0] += 3 * (file.read(3) == _BOM)
    # Lines are blank only if they are empty or start with whitespace (or the first, after a
    # byte-order mark): check those few alone.
    maybe_blank = (ends <= starts) | np.isin(firsts, list(b" \t\r\n"))
    maybe_blank[0] = True
    keep = np.ones(len(starts), dtype=bool)
    with open(path, "rb") as file:
        for i in np.flatnonzero(maybe_blank):
            keep[i] = bool(
                os.pread(file.fileno(), int(ends[i] - starts[i]), int(starts[i])).strip()
            )
    return np.stack([starts[keep], ends[keep], lines[keep]], axis=1).astype(np.int64)


def _scan_list(path: Path) -> np.ndarray:
    """One span per element of the top-level list, found by decoding each element in turn."""
    with open(path, "rb") as file:
        return _ListScanner(file, path).spans()


class _ListScanner:
    """Walks the top-level list of a ``.json`` file a block at a time. ``text`` holds the file
    from byte ``offset`` on, read as Latin-1 (one character per byte); ``pos`` is the reading
    position in it, and ``line`` the line of position ``mark``."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file, self.path = file, path
        self.text, self.offset, self.pos = "", 0, 0
        self.line, self.mark = 1, 0
        self.at_end = False
        self.decoder = json.JSONDecoder()

    def more(self) -> bool:
        """Drop the text before ``pos`` and append the next block; False at the end."""
        self.line_at(self.pos)
        self.offset += self.pos
        self.text, self.pos, self.mark = self.text[self.pos :], 0, 0
        block = self.file.read(BLOCK_BYTES)
        self.at_end = not block
        self.text += block.decode("latin-1")
        return not self.at_end

    def line_at(self, position: int) -> int:
        """The line of ``position`` (positions are asked in increasing order)."""
        self.line += self.text.count("\n", self.mark, position)
        self.mark = position
        return self.line

    def skip_space(self) -> str:
        """Move past whitespace; the next character ('' at the end of the file)."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos : self.pos + 1]

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.path}:{self.line_at(self.pos)}: {message}")

    def spans(self) -> np.ndarray:
        spans = array.array("q")  # start, end, line of each record: 24 bytes, not a tuple
        self.more()
        if self.text.startswith(_BOM.decode("latin-1")):
            self.pos = len(_BOM)
        if self.skip_space() != "[":
            raise ValueError(f"{self.path}: a .json file must hold a list of records")
        self.pos += 1
        if self.skip_space() == "]":
            self.pos += 1
        else:
            while True:
                self.skip_space()
                try:
                    _, end = self.decoder.raw_decode(self.text, self.pos)
                except json.JSONDecodeError as error:
                    if self.more():  # the record may go on in the next block
                        continue
                    self.pos = max(self.pos, error.pos)
                    message = f"malformed JSON in record {len(spans) // 3}: {error.msg}"
                    raise self.error(message) from None
                after = _WHITESPACE.match(self.text, end).end()
                separator = self.text[after : after + 1]
                if separator not in (",", "]") and self.more():
                    continue  # a number cut by the block's end, or the separator in the next
                spans.extend((self.offset + self.pos, self.offset + end, self.line_at(self.pos)))
                self.pos = after
                if not separator:
                    raise self.error("the file ends inside the list (cut short?)")
                if separator not in (",", "]"):
                    raise self.error("expected ',' or ']' after a record")
                self.pos += 1
                if separator == "]":
                    break
        if self.skip_space():
            raise self.error("text after the end of the list")
        return np.frombuffer(spans, dtype=np.int64).reshape(-1, 3).copy()
