import pytest

from mm15_components.data.schema import Turn
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language import IMAGE_TOKEN, ChatTemplate, build_word_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(["User", "Assistant", "Where", "is", "it", "here", "and"])


def test_template_tokens_and_answer_only_labels(tokenizer):
    turns = [
        Turn("user", f"{IMAGE_TOKEN} Where is it?"),
        Turn("assistant", "here"),
        Turn("user", "and it?"),
        Turn("assistant", "[1, 2, 3, 4]"),
    ]
    image = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    enc = ChatTemplate().encode(tokenizer, turns, [[image] * 3])
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens == [
        "User",
        ":",
        *[IMAGE_TOKEN] * 3,
        "Where",
        "is",
        "it",
        "?",
        "Assistant",
        ":",
        "here",
        "</s>",
        "User",
        ":",
        "and",
        "it",
        "?",
        "Assistant",
        ":",
        "[",
        "1",
        ",",
        "2",
        ",",
        "3",
        ",",
        "4",
        "]",
        "</s>",
    ]
    answered = [t for t, label in zip(tokens, enc.labels, strict=True) if label != IGNORE_INDEX]
    assert answered == ["here", "</s>", "[", "1", ",", "2", ",", "3", ",", "4", "]", "</s>"]
    for token_id, label in zip(enc.input_ids, enc.labels, strict=True):
        assert label in (IGNORE_INDEX, token_id)
    # the prompt for generation stops right after the last "Assistant:"
    assert tokens[: enc.prompt_length][-2:] == ["Assistant", ":"]
    assert tokens[enc.prompt_length] == "["


def test_placeholder_count_must_match_images(tokenizer):
    turns = [Turn("user", f"{IMAGE_TOKEN} {IMAGE_TOKEN} Where?"), Turn("assistant", "here")]
    with pytest.raises(
        ValueError, match=r"s7: the text has 2 <image> placeholder\(s\) but the sample has 1"
    ):
        ChatTemplate().encode(tokenizer, turns, [[7] * 4], where="s7")


def test_conversation_needs_a_final_answer(tokenizer):
    with pytest.raises(ValueError, match="end with an assistant turn"):
        ChatTemplate().encode(tokenizer, [Turn("user", "Where?")], [])
    with pytest.raises(ValueError, match="unknown role 'system'"):
        ChatTemplate().encode(tokenizer, [Turn("system", "x"), Turn("assistant", "y")], [])
