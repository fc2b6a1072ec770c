"""Token counts without decoding: equal to the full encoding's lengths, sample by sample."""

import json
import random

import numpy as np
import pytest
from helpers import CHATML
from PIL import Image, ImageFile
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mm15_components.data import Loader
from mm15_components.data.collate import SampleEncoder
from mm15_components.data.conversation import DOCUMENT_TEMPLATE, ConversationDataModule
from mm15_components.data.formats import JSONSource
from mm15_components.data.lengths import BAD, token_counts
from mm15_components.data.mixture import Mixture, Source
from mm15_components.language import IMAGE_TOKEN, ChatTemplate
from mm15_components.language.chat import TokenizerChatTemplate
from mm15_components.language.tokenizer import add_image_token
from mm15_components.vision import AnyResSplitter

WORDS = "the a cat dog sits on mat what where is it red blue box two three sign reads".split()


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained here, so counts depend on merges and spaces."""
    rng = random.Random(0)
    text = [" ".join(rng.choices(WORDS, k=12)) for _ in range(300)]
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        text,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return add_image_token(tok)


def sentence(rng, low=1, high=12):
    return " ".join(rng.choices(WORDS, k=rng.randrange(low, high))) + rng.choice(["", "?", "."])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Conversations (0-4 images, 1-3 rounds) and interleaved documents over images of
    random sizes, one of them a JPEG with an EXIF orientation."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    images = []
    for k in range(30):
        size = (rng.randrange(1, 300), rng.randrange(1, 300))
        Image.new("RGB", size, (k * 8, 20, 90)).save(root / f"{k}.png")
        images.append(f"{k}.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.new("RGB", (90, 40), "red").save(root / "exif.jpg", exif=exif)
    images.append("exif.jpg")
    conversations = []
    for k in range(200):
        paths = rng.sample(images, rng.choice([0, 1, 1, 2, 3, 4]))
        turns = []
        for round_ in range(rng.randrange(1, 4)):
            question = sentence(rng)
            if round_ == 0 and paths:
                question = IMAGE_TOKEN * len(paths) + "\n" + question
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": sentence(rng)}]
        conversations.append({"id": f"c{k}", "images": paths, "conversations": turns})
    documents = []
    for k in range(100):
        slots = [rng.choice(images) if rng.random() < 0.4 else None for _ in range(5)]
        texts = [None if image else sentence(rng) for image in slots]
        texts[-1], slots[-1] = sentence(rng), None
        documents.append({"id": f"d{k}", "images": slots, "texts": texts})
    for name, records in (("conv.jsonl", conversations), ("docs.json", documents)):
        with open(root / name, "w") as file:
            if name.endswith(".json"):
                json.dump(records, file, indent=1)
            else:
                file.writelines(json.dumps(r) + "\n" for r in records)
    return root


SPLITTERS = {
    "none": (None, "none"),
    "index": (AnyResSplitter(tile_size=32, min_tiles=2, max_tiles=6), "index"),
    "seps": (AnyResSplitter(tile_size=32, min_tiles=1, max_tiles=4, overview="before"), "seps"),
}


@pytest.mark.parametrize("tiling", SPLITTERS)
@pytest.mark.parametrize("template", ["chatml", "plain", "document"])
def test_counts_equal_the_full_encoding(corpus, tokenizer, monkeypatch, tiling, template):
    splitter, indicators = SPLITTERS[tiling]
    if template == "document":
        source, chat = JSONSource(corpus / "docs.json", "interleaved"), DOCUMENT_TEMPLATE
    else:
        source = JSONSource(corpus / "conv.jsonl")
        chat = TokenizerChatTemplate() if template == "chatml" else ChatTemplate()
    tokenizer.chat_template = CHATML if template == "chatml" else None
    encoder = SampleEncoder(tokenizer, 32, 5, (0.5,) * 3, (0.5,) * 3, chat, splitter, indicators)
    expected = [len(encoder(source[i])["input_ids"]) for i in range(len(source))]
    assert len(set(expected)) > 20  # the counts vary with text, image sizes and splitting

    def no_decoding(image):
        raise AssertionError("a pixel was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    counts = token_counts(source, encoder, np.arange(len(source)))
    assert counts.tolist() == expected


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_and_too_long_samples_through_the_mixture(tmp_path, tokenizer, workers):
    """The mixture's lengths equal its items' lengths, also where a bad or too long sample is
    replaced by the next one of its source; counted here or in worker processes."""
    Image.new("RGB", (50, 30)).save(tmp_path / "ok.png")
    rng = random.Random(2)
    records = []
    for _ in range(40):
        image = rng.choice(["ok.png", "ok.png", "missing.png", None])
        question = (f"{IMAGE_TOKEN}\n" if image else "") + sentence(rng, 1, 30)
        record = {"conversations": [{"from": "human", "value": question}]}
        record["conversations"].append({"from": "gpt", "value": sentence(rng)})
        records.append(record | ({"image": image} if image else {}))
    records[3] = "{not json"
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    # the stand-in gets over 512 draws: counted in two batches, by two workers
    train = Mixture([Source("general", path=str(path)), Source("math")], categories={"math": 5})
    data = ConversationDataModule(
        train,
        max_sample_tokens=60,
        train_samples=800,
        val_samples=8,
        max_bad_fraction=1.0,
        loader=Loader(max_tokens=400, num_workers=workers),
    )
    with pytest.warns(UserWarning):  # bad samples skipped
        data.setup("fit")
        lengths = data.train_set.lengths()
        assert lengths.tolist() == [len(data.train_set[i]["input_ids"]) for i in range(800)]
    encoded = data.train_set.sources[0]
    counts = encoded.token_counts(np.arange(40))
    assert (counts == BAD).sum() > 5  # missing images, malformed line, over 60 tokens


def test_counts_are_cached_per_file_version_and_encoder(tmp_path, corpus, tokenizer, monkeypatch):
    path = tmp_path / "conv.jsonl"
    path.write_bytes((corpus / "conv.jsonl").read_bytes())
    source = JSONSource(path, image_root=corpus)
    tokenizer.chat_template = None

    def encoder(image_tokens):
        return SampleEncoder(tokenizer, 32, image_tokens, (0.5,) * 3, (0.5,) * 3)

    first = token_counts(source, encoder(5), np.arange(0, 200, 2))
    outlines = []
    monkeypatch.setattr(JSONSource, "outline", lambda self, i: outlines.append(i) or 1 / 0)
    again = token_counts(JSONSource(path, image_root=corpus), encoder(5), np.arange(0, 200, 4))
    assert outlines == [] and again.tolist() == first[::2].tolist()
    with pytest.raises(ZeroDivisionError):  # another encoder: counted again
        token_counts(source, encoder(6), np.arange(3))
