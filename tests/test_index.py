"""Record indexes of JSON/JSONL files: spans against a plain parse, the cache and its keys,
files that change, and sharing with DataLoader workers."""

import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from mm15_components.data import index as index_module
from mm15_components.data.formats import BadSampleError, JSONSource, read_json_records
from mm15_components.data.index import RecordIndex, scan_records


def random_records(rng: random.Random, count: int) -> list[dict]:
    """Records with non-ASCII text, escapes, nesting and numbers cut anywhere by a block."""
    words = ["caf\u00e9", "na\u00efve", "\u6f22\u5b57", 'say "hi"', "back\\slash", "tab\t", "x"]
    return [
        {
            "id": f"r{i}",
            "n": rng.randrange(10**12),
            "text": " ".join(rng.choices(words, k=rng.randrange(0, 9))),
            "nested": [{"k": rng.random()} for _ in range(rng.randrange(3))],
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("block", [7, 64, 1 << 24])
def test_jsonl_spans_give_each_record_and_its_line(tmp_path, monkeypatch, block):
    monkeypatch.setattr(index_module, "BLOCK_BYTES", block)
    rng = random.Random(block)
    records = random_records(rng, 60)
    lines, expected = [], []
    for record in records:
        for _ in range(rng.randrange(3)):
            lines.append(rng.choice(["", "  ", "\r", "\t "]))  # blank lines are skipped
        lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.5))
        expected.append((record, len(lines)))
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # BOM, CRLF, no final \n
    data = path.read_bytes()
    got = [(json.loads(data[start:end]), line) for start, end, line in scan_records(path)]
    assert got == expected


@pytest.mark.parametrize("block", [5, 100, 1 << 24])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_list_spans_give_each_record_and_its_line(tmp_path, monkeypatch, block, indent):
    monkeypatch.setattr(index_module, "BLOCK_BYTES", block)
    records = random_records(random.Random(block), 40) + [7, "text", [1, 2], None, 12.5e3]
    text = json.dumps(records, indent=indent, ensure_ascii=False)
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    data = path.read_bytes()
    spans = scan_records(path)
    assert [json.loads(data[start:end]) for start, end, _ in spans] == records
    # a record's line is the line its first byte is on
    assert [line for _, _, line in spans] == [data[:s].count(b"\n") + 1 for s, _, _ in spans]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "must hold a list of records"),
        ('[{"a": 1},\n {"b": }]', r"x\.json:2: malformed JSON in record 1"),
        ('[{"a": 1}\n {"b": 2}]', r"x\.json:2: expected ',' or ']'"),
        ('[{"a": 1},\n{"b": 2}', r"x\.json:2: the file ends inside the list"),
        ('[{"a": 1}] {"b": 2}', r"x\.json:1: text after the end of the list"),
    ],
)
def test_a_malformed_json_list_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        scan_records(path)


def test_empty_lists_and_other_suffixes(tmp_path):
    (tmp_path / "e.json").write_text(" [ ]\n")
    assert scan_records(tmp_path / "e.json").shape == (0, 3)
    (tmp_path / "e.jsonl").write_text("\n\n")
    assert scan_records(tmp_path / "e.jsonl").shape == (0, 3)
    with pytest.raises(ValueError, match="no records"):
        JSONSource(tmp_path / "e.jsonl")
    (tmp_path / "x.txt").write_text("[]")
    with pytest.raises(ValueError, match="expected a .json or .jsonl file"):
        scan_records(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="no such file"):
        scan_records(tmp_path / "missing.jsonl")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def text_records(*texts):
    return [{"id": f"r{i}", "text": text} for i, text in enumerate(texts)]


def texts_of(source):
    return [source[i].turns[0].content for i in range(len(source))]


def test_the_index_is_cached_beside_the_file_and_memory_mapped(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a", "b", "c"))
    source = JSONSource(path, "text")
    assert (tmp_path / "t.jsonl.mm15-index" / "index.json").is_file()
    assert isinstance(source.index.spans, np.memmap)
    # opened again: read from the cache, not scanned
    monkeypatch.setattr(index_module, "scan_records", lambda path: pytest.fail("scanned"))
    assert texts_of(JSONSource(path, "text")) == ["a", "b", "c"]
    # a spawned worker gets the cache's place, not a copy of the spans
    assert len(pickle.dumps(source)) < 2000
    assert texts_of(pickle.loads(pickle.dumps(source))) == ["a", "b", "c"]


def test_index_dir_and_unwritable_data_folders(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a"))
    JSONSource(path, "text", index_dir=tmp_path / "cache")
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("t.jsonl-")
    assert not (tmp_path / "t.jsonl.mm15-index").exists()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    JSONSource(path, "text")
    assert len(list((tmp_path / "xdg" / "mm15_components" / "index").iterdir())) == 1


def test_a_changed_file_gets_a_new_index(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a", "b"))
    assert texts_of(JSONSource(path, "text")) == ["a", "b"]
    write_jsonl(path, text_records("a", "b", "c"))  # appended: new size
    assert texts_of(JSONSource(path, "text")) == ["a", "b", "c"]
    # same size and modification time, other records: the edge hash tells them apart
    stat = path.stat()
    write_jsonl(path, text_records("x", "y", "z"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert texts_of(JSONSource(path, "text")) == ["x", "y", "z"]
    # only the current version's arrays stay in the cache
    assert len(list((tmp_path / "t.jsonl.mm15-index").glob("*.npy"))) == 1


def test_an_index_from_another_file_is_not_used(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", text_records("one", "two"))
    second = write_jsonl(tmp_path / "b.jsonl", text_records("three", "four", "five"))
    JSONSource(first, "text")
    os.rename(tmp_path / "a.jsonl.mm15-index", tmp_path / "b.jsonl.mm15-index")
    assert texts_of(JSONSource(second, "text")) == ["three", "four", "five"]


def test_a_file_changed_under_an_index_in_use_raises_naming_it(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a", "b"))
    source = JSONSource(path, "text")
    write_jsonl(path, text_records("bb", "a"))
    with pytest.raises(ValueError, match=r"t\.jsonl changed after it was indexed"):
        source[1]


def test_a_truncated_last_line_is_a_bad_sample_naming_it(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a", "b", "c"))
    path.write_bytes(path.read_bytes()[:-9])  # the copy was cut in the last record
    source = JSONSource(path, "text")
    assert len(source) == 3 and source[1].turns[0].content == "b"
    with pytest.raises(BadSampleError, match=r"t\.jsonl:3: malformed JSON") as info:
        source[2]
    assert info.value.kind == "malformed_json"


def test_read_json_records_reads_small_files_whole(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"a": 1}, {"b": "\u00e9"}], indent=1))
    assert read_json_records(path) == [
        ({"a": 1}, f"{path}: record 0 (line 2)"),
        ({"b": "\u00e9"}, f"{path}: record 1 (line 5)"),
    ]
    assert not (tmp_path / "s.json.mm15-index").exists()  # not cached


def test_workers_read_the_same_records(tmp_path):
    records = text_records(*[f"t{i}" for i in range(40)])
    source = JSONSource(write_jsonl(tmp_path / "t.jsonl", records), "text")
    loader = torch.utils.data.DataLoader(
        source, batch_size=None, num_workers=2, collate_fn=lambda s: s.turns[0].content
    )
    assert list(loader) == [f"t{i}" for i in range(40)]


def test_record_index_scan_is_not_cached(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_records("a"))
    index = RecordIndex.scan(path)
    assert index.folder is None and len(index) == 1 and index.read(0).startswith(b"{")
