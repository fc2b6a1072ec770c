"""litdata sources: a file optimized into chunks reads back as the file does, bad input is named,
and training on it resumes bit-exactly mid-epoch."""

import json
import re

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from mm15_components.cli import main
from mm15_components.data import Encoding, Loader
from mm15_components.data.conversation import ConversationDataModule
from mm15_components.data.formats import BadSampleError, BadSamplePolicy, JSONSource
from mm15_components.data.mixture import Mixture, Source
from mm15_components.data.stream import StreamingSource, optimize
from mm15_components.language import IMAGE_TOKEN

pytest.importorskip("litdata")


def write_corpus(root, count=12):
    """A conversation file whose records have 0-2 images of different sizes."""
    (root / "img").mkdir()
    records = []
    for k in range(count):
        images = [f"{k}-{j}.png" for j in range(k % 3)]
        for j, name in enumerate(images):
            pixels = np.random.default_rng(k * 3 + j).integers(0, 255, (20 + k, 30 - j, 3))
            Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / name)
        question = IMAGE_TOKEN * len(images) + f" what is shape {k}?"
        record = {"id": f"s{k}", "images": images, "conversations": []}
        record["conversations"] = [
            {"from": "human", "value": question},
            {"from": "gpt", "value": f"a circle {k}"},
        ]
        records.append(record)
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def chunks(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    path = write_corpus(root)
    main(["data", "optimize", str(path), str(root / "chunks"), "--image_root", str(root / "img")])
    return root


def test_chunks_read_back_as_the_file(chunks):
    source = JSONSource(chunks / "data.jsonl", image_root=chunks / "img")
    stream = StreamingSource(str(chunks / "chunks"))
    assert len(stream) == len(source) == 12
    expected = {source[i].id: (i, source[i]) for i in range(len(source))}
    for k in range(len(stream)):
        sample = stream[k]
        line, original = expected.pop(sample.id)
        assert sample.turns == original.turns
        assert [np.asarray(im).tolist() for im in sample.images] == [
            np.asarray(im).tolist() for im in original.images
        ]
        assert stream.outline(k).image_sizes == [im.size[::-1] for im in original.images]
        assert stream.where(k).endswith(f"item {k} ({chunks / 'data.jsonl'}:{line + 1})")
    assert not expected


def test_bad_input_is_named_when_optimizing_and_reading(tmp_path, capfd):
    path = write_corpus(tmp_path, count=6)
    (tmp_path / "img" / "4-0.png").unlink()  # line 5's image is missing
    image = tmp_path / "img" / "2-1.png"  # line 3's image: its header reads, its pixels not
    image.write_bytes(image.read_bytes()[:120])
    with pytest.raises(RuntimeError, match=r"data\.jsonl:5: image .*4-0\.png not found"):
        optimize(str(path), str(tmp_path / "raise"), image_root=str(tmp_path / "img"))
    written = optimize(
        str(path), str(tmp_path / "skip"), image_root=str(tmp_path / "img"), on_bad_sample="skip"
    )
    # the warning comes from the worker process, the count from this one
    out, err = capfd.readouterr()
    assert re.search(r"left out: .*data\.jsonl:5: image .*4-0\.png not found", err)
    assert "5 samples of" in out and "1 bad ones left out" in out
    assert written == 5
    stream = StreamingSource(str(tmp_path / "skip"))
    errors = []
    for k in range(len(stream)):
        try:
            stream[k]
        except BadSampleError as error:
            errors.append(error)
    assert len(errors) == 1 and errors[0].kind == "unreadable_image"
    assert "data.jsonl:3)" in str(errors[0]) and "2-1.png" in str(errors[0])
    with pytest.raises(ValueError, match="nor a litdata dataset"):
        StreamingSource(str(tmp_path / "img"))


class BagOfTokens(L.LightningModule):
    """A model small enough to train in a second, whose weights depend on every batch's
    tokens, images and order."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.tokens = torch.nn.EmbeddingBag(vocab, 4)
        self.pixels = torch.nn.Linear(3, 4)

    def training_step(self, batch, batch_index):
        text = self.tokens(batch["input_ids"]).sum(0)
        pixels = self.pixels(batch["pixel_values"].mean((2, 3))).sum(0)
        return ((text - pixels.tanh()) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(chunks, root, max_steps, ckpt_path=None):
    torch.manual_seed(0)
    train = Mixture([Source("general", path=str(chunks / "chunks")), Source("text_only")])
    data = ConversationDataModule(
        train,
        train_samples=16,
        encoding=Encoding(image_size=16, image_tokens=4),
        loader=Loader(batch_size=4, num_workers=1),
    )
    data.policy = BadSamplePolicy("raise")
    model = BagOfTokens(len(data.tokenizer))
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        root, every_n_train_steps=1, save_last=True, save_top_k=0
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        default_root_dir=root,
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return torch.load(root / "last.ckpt", weights_only=False)


def test_training_on_chunks_resumes_bit_exactly(chunks, tmp_path):
    """6 steps over 4 batches an epoch; stopped after 3 (mid-epoch) and resumed. A resume
    that lost the loader's position (the negative control) ends elsewhere."""
    straight = fit(chunks, tmp_path / "straight", 6)
    stopped = fit(chunks, tmp_path / "resumed", 3)
    (position,) = stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (position["epoch"], position["consumed"]) == (0, 3)
    assert sum(position["counts"]["categories"].values()) == 3 * 4  # 3 batches of 4
    resumed = fit(chunks, tmp_path / "resumed", 6, tmp_path / "resumed" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 6
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=0, atol=0)
    stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"] = [{"epoch": 0, "consumed": 0}]
    torch.save(stopped, tmp_path / "lost.ckpt")
    lost = fit(chunks, tmp_path / "lost", 6, tmp_path / "lost.ckpt")
    assert not torch.equal(
        lost["state_dict"]["tokens.weight"], straight["state_dict"]["tokens.weight"]
    )
