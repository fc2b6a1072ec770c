import json
import warnings
from collections import Counter

import pytest
from helpers import build_chatml_tokenizer
from PIL import Image

from mm15_components.data import Encoding, Loader
from mm15_components.data.collate import SampleEncoder
from mm15_components.data.conversation import (
    DOCUMENT_TEMPLATE,
    ConversationDataModule,
    EncodedSource,
    MixtureStatsLogger,
)
from mm15_components.data.formats import BadSampleError, BadSamplePolicy, JSONSource
from mm15_components.data.mixture import Mixture, MixtureDataset, Source
from mm15_components.data.schema import Turn
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language import IMAGE_TOKEN, ChatTemplate, build_word_tokenizer
from mm15_components.language.chat import TokenizerChatTemplate, chat_template_for


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(
        ["user", "assistant", "User", "Assistant", "Where", "is", "it", "here", "and", "a", "cat"]
    )


@pytest.fixture(scope="module")
def chatml_tokenizer():
    return build_chatml_tokenizer(["Where", "is", "it", "here", "and"])


def answered(tok, enc):
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    return [t for t, label in zip(tokens, enc.labels, strict=True) if label != IGNORE_INDEX]


# ---- templates ----------------------------------------------------------------------------
def test_tokenizer_chat_template_tokens_and_answer_only_labels(chatml_tokenizer):
    tok = chatml_tokenizer
    turns = [
        Turn("user", f"{IMAGE_TOKEN} Where is it?"),
        Turn("assistant", "here"),
        Turn("user", "and it?"),
        Turn("assistant", "here and here"),
    ]
    image = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    enc = TokenizerChatTemplate().encode(tok, turns, [[image] * 2])
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    # the template's own text, newlines dropped by the whitespace pre-tokenizer
    assert tokens == [
        "<|im_start|>", "user", IMAGE_TOKEN, IMAGE_TOKEN, "Where", "is", "it", "?", "<|im_end|>",
        "<|im_start|>", "assistant", "here", "<|im_end|>",
        "<|im_start|>", "user", "and", "it", "?", "<|im_end|>",
        "<|im_start|>", "assistant", "here", "and", "here", "<|im_end|>",
    ]  # fmt: skip
    # loss on each answer and the end-of-turn marker the template writes after it
    assert answered(tok, enc) == ["here", "<|im_end|>", "here", "and", "here", "<|im_end|>"]
    assert tokens[: enc.prompt_length][-2:] == ["<|im_start|>", "assistant"]
    for token_id, label in zip(enc.input_ids, enc.labels, strict=True):
        assert label in (IGNORE_INDEX, token_id)


def test_template_choice_follows_the_tokenizer(tokenizer, chatml_tokenizer):
    assert isinstance(chat_template_for(chatml_tokenizer), TokenizerChatTemplate)
    assert isinstance(chat_template_for(tokenizer), ChatTemplate)


def test_data_module_uses_a_pretrained_tokenizers_template(tmp_path, chatml_tokenizer):
    chatml_tokenizer.save_pretrained(tmp_path / "tok")
    train = Mixture([Source("text_only")])
    data = ConversationDataModule(
        train, encoding=Encoding(tokenizer=str(tmp_path / "tok")), loader=Loader(batch_size=2)
    )
    assert isinstance(data.chat_template, TokenizerChatTemplate)
    data.setup("fit")
    tokens = data.tokenizer.convert_ids_to_tokens(data.train_set[0]["input_ids"])
    assert tokens[:2] == ["<|im_start|>", "user"] and tokens[-1] == "<|im_end|>"
    plain = ConversationDataModule(
        train, encoding=Encoding(tokenizer=str(tmp_path / "tok"), use_tokenizer_template=False)
    )
    assert isinstance(plain.chat_template, ChatTemplate)


def test_tokenizer_template_that_rewrites_history_is_refused(chatml_tokenizer):
    tok = build_word_tokenizer(["user", "assistant", "here", "it"])
    # renders only the last message: each prefix is not a prefix of the whole
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %} it{% endif %}"
    turns = [Turn("user", "it"), Turn("assistant", "here")]
    with pytest.raises(ValueError, match="s1: the tokenizer's chat template"):
        TokenizerChatTemplate().encode(tok, turns, [], where="s1")


def test_document_template_puts_loss_on_the_text_only(tokenizer):
    image = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    turns = [Turn("assistant", f"{IMAGE_TOKEN}\na cat\n{IMAGE_TOKEN}\nhere")]
    enc = DOCUMENT_TEMPLATE.encode(tokenizer, turns, [[image] * 2, [image] * 3])
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens == [*[IMAGE_TOKEN] * 2, "a", "cat", *[IMAGE_TOKEN] * 3, "here", "</s>"]
    assert answered(tokenizer, enc) == ["a", "cat", "here", "</s>"]


# ---- readers ------------------------------------------------------------------------------
def write_image(path, size=(20, 12)):
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path.name


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def conversation(images, question="Where is it?", answer="here"):
    record = {"id": "r", "conversations": [
        {"from": "human", "value": f"{IMAGE_TOKEN * len(images)} {question}"},
        {"from": "gpt", "value": answer},
    ]}  # fmt: skip
    if len(images) == 1:
        record["image"] = images[0]
    elif images:
        record["images"] = images
    return record


def test_every_format_reads_turns_and_images(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    a, b = write_image(root / "a.png"), write_image(root / "b.png", (8, 30))
    two = conversation([a, b])
    roles = {
        "id": "u",
        "conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "x"}],
    }
    conv = JSONSource(
        write_jsonl(tmp_path / "c.jsonl", [conversation([a]), two, roles]), image_root=root
    )
    assert len(conv) == 3
    sample = conv[1]
    assert [im.size for im in sample.images] == [(20, 12), (8, 30)]
    assert sample.turns == [
        Turn("user", f"{IMAGE_TOKEN * 2} Where is it?"),
        Turn("assistant", "here"),
    ]
    assert conv[2].turns == [Turn("user", "hi"), Turn("assistant", "x")] and conv[2].images == []

    json_file = tmp_path / "cap.json"
    json_file.write_text(json.dumps([{"image": a, "caption": "a cat"}]))
    caption = JSONSource(json_file, "caption", root)[0]
    assert caption.turns == [Turn("assistant", f"{IMAGE_TOKEN}\na cat")]
    assert len(caption.images) == 1

    doc = {"images": [a, None, b, None], "texts": [None, "a cat", None, "here"]}
    inter = JSONSource(write_jsonl(tmp_path / "i.jsonl", [doc]), "interleaved", root)[0]
    assert inter.turns == [Turn("assistant", f"{IMAGE_TOKEN}\na cat\n{IMAGE_TOKEN}\nhere")]
    assert [im.size for im in inter.images] == [(20, 12), (8, 30)]

    text = JSONSource(write_jsonl(tmp_path / "t.jsonl", [{"text": "a cat"}]), "text")[0]
    assert text.turns == [Turn("assistant", "a cat")] and text.images == []


# ---- bad input ----------------------------------------------------------------------------
def bad_files(tmp_path):
    """kind -> (records of a .jsonl file whose line 2 is bad of that kind, format)."""
    root = tmp_path
    good = write_image(root / "good.png")
    broken = root / "broken.png"
    broken.write_bytes(b"not an image at all")
    truncated = root / "truncated.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    no_answer = conversation([good])
    no_answer["conversations"] = no_answer["conversations"][:1]
    mismatch = conversation([good])  # one placeholder, two images
    mismatch["images"] = [mismatch.pop("image")] * 2
    return {
        "malformed_json": ['{"image": "good.png", "conversations": ['],
        "malformed_record": [{"image": "good.png"}],
        "missing_file": [conversation(["nowhere.png"])],
        "unreadable_image": [conversation(["broken.png"])],
        "truncated_image": [conversation(["truncated.png"])],
        "placeholder_mismatch": [mismatch],
        "no_assistant_turn": [no_answer],
    }, conversation([good])


KIND_OF = {"truncated_image": "unreadable_image"}


def test_each_bad_input_raises_naming_file_and_line(tmp_path):
    cases, good = bad_files(tmp_path)
    for name, bad in cases.items():
        source = JSONSource(write_jsonl(tmp_path / f"{name}.jsonl", [good, *bad]))
        source[0]
        with pytest.raises(BadSampleError, match=rf"{name}\.jsonl:2: ") as info:
            source[1]  # records are parsed, and images opened, when read
        assert info.value.kind == KIND_OF.get(name, name), name


def test_each_bad_input_is_skipped_and_counted(tmp_path, tokenizer):
    encoder = SampleEncoder(tokenizer, 16, 4, (0.5,) * 3, (0.5,) * 3)
    cases, good = bad_files(tmp_path)
    for name, bad in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", [good, *bad, good])
        policy = BadSamplePolicy("skip", max_bad_fraction=1.0)  # a third of the file is bad
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source = JSONSource(path)
            encoded = EncodedSource(source, encoder)
            mixture = MixtureDataset([encoded], ["c"], [1.0], 50, policy=policy)
            items = [mixture[i] for i in range(50)]
        kind = KIND_OF.get(name, name)
        skipped = sum(item["skipped"] for item in items)
        assert len(source) == 3 and skipped == policy.counts[kind] > 0, name
        assert {item["id"] for item in items} == {"r"}, name  # only the good records
        assert len([w for w in caught if kind in str(w.message)]) == 1, name  # warned once


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_byte_that_is_not_utf8_is_a_bad_sample_naming_file_and_line(tmp_path, suffix, tokenizer):
    good = json.dumps(conversation([])).encode()
    bad = json.dumps({**conversation([]), "id": "caf\u00e9"}).encode().replace(b"\\u00e9", b"\xe9")
    if suffix == ".jsonl":
        text, where = b"\n".join([good, bad, good]) + b"\n", r"x\.jsonl:2: "
    else:
        text, where = b"[\n" + b",\n".join([good, bad, good]) + b"\n]", r"record 1 \(line 3\): "
    path = tmp_path / f"x{suffix}"
    path.write_bytes(text)
    source = JSONSource(path)
    assert [turn.content for turn in source[2].turns] == [" Where is it?", "here"]
    with pytest.raises(BadSampleError, match=where + "not UTF-8: byte 0xe9") as info:
        source[1]
    assert info.value.kind == "malformed_json"
    policy = BadSamplePolicy("skip", max_bad_fraction=1.0)  # a third of the file is bad
    encoded = EncodedSource(source, SampleEncoder(tokenizer, 16, 4, (0.5,) * 3, (0.5,) * 3))
    with pytest.warns(UserWarning, match="malformed_json"):
        mixture = MixtureDataset([encoded], ["c"], [1.0], 30, policy=policy)
        items = [mixture[i] for i in range(30)]
    assert sum(item["skipped"] for item in items) == policy.counts["malformed_json"] > 0
    assert {item["id"] for item in items} == {"r"}


def test_sample_over_the_token_budget(tmp_path, tokenizer):
    records = [conversation([], "Where is it?", "here"), conversation([], "it?", "here " * 30)]
    path = write_jsonl(tmp_path / "long.jsonl", records)
    encoder = SampleEncoder(tokenizer, 16, 4, (0.5,) * 3, (0.5,) * 3)
    source = EncodedSource(JSONSource(path), encoder, max_tokens=20)
    assert len(source[0]["input_ids"]) <= 20
    with pytest.raises(BadSampleError, match=r"long\.jsonl:2: \d+ tokens, over the limit of 20"):
        source[1]
    policy = BadSamplePolicy("skip", max_bad_fraction=1.0)  # half of the file is bad
    with pytest.warns(UserWarning, match="too_long"):
        items = [MixtureDataset([source], ["c"], [1.0], 20, policy=policy)[i] for i in range(20)]
    assert sum(item["skipped"] for item in items) == policy.counts["too_long"] > 0


def test_data_module_batches_count_skipped_samples_and_logger_logs_them(tmp_path):
    cases, good = bad_files(tmp_path)
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, cases["missing_file"][0], "{oops"])
    train = Mixture([Source("general", path=str(path)), Source("text_only")])
    with pytest.warns(UserWarning):
        data = ConversationDataModule(
            train,
            train_samples=64,
            val_samples=8,
            max_bad_fraction=1.0,
            loader=Loader(batch_size=16),
        )
        data.prepare_data()
        data.setup("fit")
        loader = data.train_dataloader()
        batches = list(loader)
    assert sum(batch["skipped"] for batch in batches) > 0
    assert data.policy.counts.keys() == {"missing_file", "malformed_json"}
    categories = [c for batch in batches for c in batch["categories"]]
    assert len(categories) == 64 and set(categories) == {"general", "text_only"}

    class Recorder:
        def __init__(self):
            self.logged = {}

        def log(self, name, value):
            self.logged[name] = value

    class Trainer:
        datamodule = data

    logger, module = MixtureStatsLogger(), Recorder()
    for index, batch in enumerate(batches):
        logger.on_train_batch_end(Trainer(), module, None, batch, index)
    assert module.logged["data/skipped"] == sum(batch["skipped"] for batch in batches)
    share = categories.count("general") / len(categories)
    assert module.logged["data/share/general"] == pytest.approx(share)
    counts = {
        "skipped": sum(batch["skipped"] for batch in batches),
        "categories": Counter(categories),
    }
    assert loader.state_dict()["counts"] == counts
    restored = data.train_dataloader()
    restored.load_state_dict(loader.state_dict())
    assert restored.state_dict() == loader.state_dict()


def test_setup_adds_the_stats_logger_once():
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    data = ConversationDataModule(Mixture([Source("math")]), train_samples=8, val_samples=8)
    data.trainer = trainer
    data.setup("fit")
    data.setup("validate")
    assert sum(isinstance(c, MixtureStatsLogger) for c in trainer.callbacks) == 1


def test_raise_policy_through_the_data_module(tmp_path):
    cases, good = bad_files(tmp_path)
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "{oops"])
    train = Mixture([Source("general", path=str(path))])
    data = ConversationDataModule(
        train, on_bad_sample="raise", train_samples=16, loader=Loader(batch_size=16)
    )
    data.setup("fit")
    with pytest.raises(BadSampleError, match=r"bad\.jsonl:2: malformed JSON"):
        next(iter(data.train_dataloader()))


def test_relative_paths_are_under_data_root(tmp_path):
    folder = tmp_path / "sft"
    (folder / "images").mkdir(parents=True)
    write_image(folder / "images" / "a.png")
    write_jsonl(folder / "train.jsonl", [conversation(["a.png"])])
    source = Source("general", path="sft/train.jsonl", image_root="sft/images")
    data = ConversationDataModule(
        Mixture([source]), data_root=str(tmp_path), train_samples=2, val_samples=2
    )
    data.setup("fit")
    assert data.train_set[0]["pixel_values"].shape == (1, 3, 64, 64)
    elsewhere = ConversationDataModule(Mixture([source]), data_root=str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="elsewhere/sft/train.jsonl: no such file"):
        elsewhere.setup("fit")
