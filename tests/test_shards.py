import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Dataset

from mm15_components.data import shards
from mm15_components.data.conversation import ConversationDataModule
from mm15_components.data.formats import BadSampleError, BadSamplePolicy, JSONSource
from mm15_components.data.mixture import Mixture, MixtureDataset, Source
from mm15_components.data.schema import Turn
from mm15_components.data.shards import ShardSource, open_source


def png(colour: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def caption(key: str, text: str, image: str | None = None) -> tuple[str, bytes]:
    record = {"id": key, "image": image or f"{key}.png", "caption": text}
    return f"{key}.json", json.dumps(record).encode()


class Ids(Dataset):
    """A source's samples as the dicts ``MixtureDataset`` draws (ids only)."""

    def __init__(self, samples: Dataset) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return {"id": self.samples[index].id}


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 200, 10), (9, 8, 7)]


@pytest.fixture
def corpus(tmp_path):
    """Two caption shards: samples 0-2 in the first, 3-4 in the second (in a folder)."""
    first = []
    for k in range(3):
        first += [caption(f"s{k}", f"shape {k}"), (f"s{k}.png", png(COLOURS[k]))]
    write_shard(tmp_path / "part-000.tar", first)
    second = []
    for k in (3, 4):
        second += [(f"d/s{k}.png", png(COLOURS[k])), caption(f"d/s{k}", f"shape {k}", f"s{k}.png")]
    write_shard(tmp_path / "part-001.tar", second)
    return tmp_path


def test_records_and_images_read_back_as_written(corpus):
    source = ShardSource(str(corpus / "part-*.tar"), "caption")
    assert len(source) == 5
    for k in range(5):
        sample = source[k]
        key = f"s{k}" if k < 3 else f"d/s{k}"
        assert sample.id == key
        assert sample.turns == [Turn("assistant", f"<image>\nshape {k}")]
        assert len(sample.images) == 1
        pixels = np.asarray(sample.images[0])
        assert pixels.shape == (4, 6, 3)
        assert (pixels == COLOURS[k]).all()


def test_conversation_with_two_images_and_a_text_only_one(tmp_path):
    record = {
        "id": "c",
        "images": ["a.png", "b.png"],
        "conversations": [
            {"from": "human", "value": "<image> <image> Which is red?"},
            {"from": "gpt", "value": "first"},
        ],
    }
    text = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    write_shard(
        tmp_path / "c.tar",
        [
            ("a.png", png(COLOURS[0])),
            ("b.png", png(COLOURS[1], (3, 3))),
            ("c.json", json.dumps(record).encode()),
            ("t.json", json.dumps(text).encode()),
        ],
    )
    source = ShardSource([str(tmp_path / "c.tar")])
    sample = source[0]
    assert sample.turns == [
        Turn("user", "<image> <image> Which is red?"),
        Turn("assistant", "first"),
    ]
    assert [image.size for image in sample.images] == [(6, 4), (3, 3)]
    assert np.asarray(sample.images[1])[0, 0].tolist() == list(COLOURS[1])
    assert source[1].images == [] and source[1].id == f"{tmp_path / 'c.tar'}: t.json"


def test_opening_reads_no_record_and_no_image(corpus, monkeypatch):
    reads, decodes = [], []
    real_read, real_decode = shards.read, shards.decode_image
    monkeypatch.setattr(shards, "read", lambda *a: reads.append(a[1]) or real_read(*a))
    monkeypatch.setattr(shards, "decode_image", lambda *a: decodes.append(a) or real_decode(*a))
    source = ShardSource(str(corpus / "part-*.tar"), "caption")
    assert len(source) == 5 and reads == [] and decodes == [] and source._indexes == {}
    assert source[4].id == "d/s4"
    assert source._indexes.keys() == {1}  # only the shard read from is indexed
    assert len(reads) == 2 and len(decodes) == 1  # that sample's record and image


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_opening_reads_far_less_than_the_images(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    members = []
    for k in range(4):
        buffer = io.BytesIO()
        Image.fromarray(np.roll(noise, k, axis=0)).save(buffer, format="PNG")
        members += [caption(f"n{k}", "noise"), (f"n{k}.png", buffer.getvalue())]
    write_shard(tmp_path / "noise.tar", members)
    image_bytes = sum(len(data) for name, data in members if name.endswith(".png"))

    def bytes_read() -> int:
        with open("/proc/self/io") as io_stats:
            return int(next(line for line in io_stats if line.startswith("rchar")).split()[1])

    before = bytes_read()
    source = ShardSource(str(tmp_path / "noise.tar"), "caption")
    opened = bytes_read() - before
    assert image_bytes > 1_500_000 and opened < image_bytes / 20
    assert (np.asarray(source[2].images[0]) == np.roll(noise, 2, axis=0)).all()
    assert bytes_read() - before > image_bytes / 4  # the measure sees a sample's image read


def test_a_malformed_json_member_and_a_missing_image_name_shard_and_member(tmp_path):
    write_shard(
        tmp_path / "bad.tar",
        [
            ("x.json", b'{"caption": "a", "image": '),
            caption("y", "b"),  # y.png is not in the shard
            caption("z", "c", "z.jpg"),
            ("z.jpg", b"\xff\xd8 not a jpeg"),
        ],
    )
    source = ShardSource(str(tmp_path / "bad.tar"), "caption")
    expected = [
        ("malformed_json", "bad.tar: x.json: malformed JSON"),
        ("missing_file", "bad.tar: y.json: image member y.png not in the shard"),
        ("unreadable_image", "bad.tar: z.json: cannot read image z.jpg"),
    ]
    for index, (kind, message) in enumerate(expected):
        with pytest.raises(BadSampleError, match=message) as error:
            source[index]
        assert error.value.kind == kind


def test_bad_samples_are_skipped_by_the_mixture_policy(tmp_path):
    write_shard(
        tmp_path / "s.tar", [caption("a", "ok"), ("a.png", png(COLOURS[0])), caption("b", "no")]
    )
    policy = BadSamplePolicy("skip")
    source = ShardSource(str(tmp_path / "s.tar"), "caption")
    mixture = MixtureDataset([Ids(source)], ["c"], np.ones(1), 20, policy=policy)
    with pytest.warns(UserWarning, match="missing_file"):
        items = [mixture[i] for i in range(20)]
    # sample b (1) has no image: it is replaced by the next one, a (0), and counted
    bad = [mixture.draw(i)[1] == 1 for i in range(20)]
    assert [item["id"] for item in items] == ["a"] * 20
    assert [item["skipped"] for item in items] == [int(b) for b in bad]
    assert policy.counts == {"missing_file": sum(bad)} and 0 < sum(bad) < 20


@pytest.mark.parametrize("cut", [530, 2048, 2148])
def test_a_truncated_shard_raises_or_keeps_the_samples_before_the_damage(corpus, cut):
    data = (corpus / "part-000.tar").read_bytes()
    # s0.json: header at 0, data at 512 (under 512 bytes); s0.png: 1024, 1536; s1.json: 2048
    (corpus / "cut.tar").write_bytes(data[:cut])
    with pytest.raises(BadSampleError, match="cut.tar: truncated or corrupt") as error:
        ShardSource(str(corpus / "cut.tar"), "caption")
    assert error.value.kind == "unreadable_shard"
    policy = BadSamplePolicy("skip")
    with pytest.warns(UserWarning, match="unreadable_shard"):
        source = ShardSource(
            [str(corpus / "cut.tar"), str(corpus / "part-001.tar")], "caption", policy
        )
    assert policy.counts == {"unreadable_shard": 1}
    kept = 1 if cut >= 2048 else 0  # s0 whole before the damage
    assert len(source) == kept + 2
    assert [source[i].id for i in range(len(source))] == ["s0"] * kept + ["d/s3", "d/s4"]


def test_files_that_are_not_shards_are_refused(tmp_path):
    (tmp_path / "zero.tar").write_bytes(b"definitely not a tar file" * 40)
    with pytest.raises(ValueError, match="zero.tar: not an uncompressed tar file"):
        ShardSource(str(tmp_path / "zero.tar"))
    with pytest.raises(ValueError, match="none-.*tar: no shard matches"):
        ShardSource(str(tmp_path / "none-*.tar"))
    with pytest.raises(ValueError, match="missing.tar: no such shard"):
        ShardSource(str(tmp_path / "missing.tar"))
    write_shard(tmp_path / "images.tar", [("a.png", png(COLOURS[0]))])
    with pytest.raises(ValueError, match="no .json member"):
        ShardSource(str(tmp_path / "images.tar"))


def test_a_mixture_of_a_json_file_and_shards_draws_from_both(corpus):
    (corpus / "img.png").write_bytes(png(COLOURS[2]))
    (corpus / "pairs.jsonl").write_text(
        json.dumps({"id": "file", "image": "img.png", "caption": "from a file"}) + "\n"
    )
    sources = [
        open_source(str(corpus / "pairs.jsonl"), "caption"),
        open_source(str(corpus / "part-*.tar"), "caption"),
    ]
    assert isinstance(sources[0], JSONSource) and isinstance(sources[1], ShardSource)
    mixture = MixtureDataset(
        [Ids(s) for s in sources], ["file", "shards"], np.array([0.5, 0.5]), 40, seed=3
    )
    items = [mixture[i] for i in range(40)]
    drawn = [mixture.draw(i) for i in range(40)]
    expected = [
        "file" if source == 0 else ["s0", "s1", "s2", "d/s3", "d/s4"][sample]
        for source, sample in drawn
    ]
    assert [item["id"] for item in items] == expected
    assert {source for source, _ in drawn} == {0, 1}
    with pytest.raises(ValueError, match="image_root must be unset"):
        open_source(str(corpus / "part-*.tar"), "caption", image_root=str(corpus))


def test_conversation_data_module_trains_on_shards(corpus):
    """A mixture source whose path is a shard glob feeds the data module's batches."""
    mixture = Mixture([Source("caption", path=str(corpus / "part-*.tar"), format="caption")])
    data = ConversationDataModule(mixture, batch_size=4, train_samples=8, val_samples=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["pixel_values"].shape[0] == 4 and set(batch["categories"]) == {"caption"}
    captions = {f"shape {k}" for k in range(5)}
    pairs = zip(batch["input_ids"], batch["labels"], strict=True)
    answers = data.tokenizer.batch_decode(
        [ids[labels != -100] for ids, labels in pairs], skip_special_tokens=True
    )
    assert set(answers) <= captions
