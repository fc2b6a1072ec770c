"""The batch contract: what the encoder and the collate functions return is exactly what the
TypedDicts of ``data.schema`` declare, key for key and type for type."""

import types
import typing
from functools import partial

import pytest
import torch
from PIL import Image

from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.mixture import MixtureCounts, collate_with_categories
from mm15_components.data.packing import collate_packed
from mm15_components.data.query import collate_query
from mm15_components.data.schema import (
    EncodedSample,
    MixtureFields,
    PackedBatch,
    PredictBatch,
    QueryItem,
    Sample,
    TrainingBatch,
    Turn,
)
from mm15_components.language import build_word_tokenizer

WORDS = ["Where", "is", "the", "red", "square", "User", "Assistant", "What", "colour", "red"]


def conforms(value, hint) -> bool:
    """Whether ``value`` is of the annotated type (classes, ``X | None``, ``list[X]`` and
    ``dict[K, Any]``)."""
    if isinstance(hint, types.UnionType):
        return any(conforms(value, arm) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (element,) = typing.get_args(hint)
        return isinstance(value, list) and all(conforms(v, element) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(conforms(k, typing.get_args(hint)[0]) for k in value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def assert_matches(value: dict, contract: type) -> None:
    hints = typing.get_type_hints(contract)
    assert contract.__required_keys__ == hints.keys()  # every key required: none optional
    assert set(value) == set(hints), f"{contract.__name__}: keys differ"
    wrong = {key: type(value[key]) for key in hints if not conforms(value[key], hints[key])}
    assert not wrong, f"{contract.__name__}: values of the wrong type {wrong}"


@pytest.fixture(scope="module")
def items() -> list[EncodedSample]:
    encoder = SampleEncoder(build_word_tokenizer(WORDS), 16, 4, (0.5,) * 3, (0.5,) * 3)
    image = Image.new("RGB", (32, 24), (200, 0, 0))
    grounding = Sample(
        [Turn("user", "<image> Where is the red square?"), Turn("assistant", "[1, 2, 30, 20]")],
        [image],
        id="box",
        target_box=(1.0, 2.0, 30.0, 20.0),
    )
    text_only = Sample(
        [Turn("user", "What colour?"), Turn("assistant", "red")],
        id="text",
        answers=["red"],
        metric="exact_match",
    )
    return [encoder(grounding), encoder(text_only)]


def test_encoded_sample_matches_its_contract(items):
    for item in items:
        assert_matches(item, EncodedSample)


def test_training_batch_matches_its_contract(items):
    assert_matches(collate(items, pad_token_id=0), TrainingBatch)


def test_packed_batch_matches_its_contract(items):
    assert_matches(collate_packed(items, pad_token_id=0, row_length=64), PackedBatch)


def test_predict_batch_matches_its_contract(items):
    image = Image.new("RGB", (8, 8))
    queries = [QueryItem(**it, image=image, name=it["id"], query="q") for it in items]
    assert_matches(queries[0], QueryItem)
    assert_matches(collate_query(queries, pad_token_id=0), PredictBatch)


def test_contract_check_catches_an_undeclared_key(items):
    batch = {**collate(items, pad_token_id=0), "extra": torch.zeros(1)}
    with pytest.raises(AssertionError, match="keys differ"):
        assert_matches(batch, TrainingBatch)


def test_mixture_batch_adds_exactly_its_declared_fields(items):
    mixture_items = [
        {**item, "category": category, "skipped": skipped}
        for item, category, skipped in zip(items, ["text", "grounding"], [2, 0], strict=True)
    ]
    batch = collate_with_categories(mixture_items, partial(collate, pad_token_id=0))
    MixtureCounts().add(batch)
    training = typing.get_type_hints(TrainingBatch)
    assert_matches({k: v for k, v in batch.items() if k not in training}, MixtureFields)
    assert batch["data_counts"] == {"skipped": 2, "categories": {"text": 1, "grounding": 1}}
