import pytest
import torch
from helpers import build_chatml_tokenizer, training_turn

from mm15_components.data import Encoding, QueryDataModule
from mm15_components.data.datamodule import SyntheticDataModule
from mm15_components.data.prompt import question_sample, question_turn
from mm15_components.data.synthetic.dataset import vocabulary
from mm15_components.language import IMAGE_TOKEN

QUESTION = "Where is the red circle?"


def prompt_of(item: dict) -> list[int]:
    return item["input_ids"][: item["prompt_length"]].tolist()


def predict_item(tmp_path, image, question, **encoding) -> dict:
    path = tmp_path / "asked.png"
    image.save(path)
    data = QueryDataModule([str(path)], query=question, encoding=Encoding(**encoding))
    data.setup("predict")
    return data.predict_set[0]


def test_question_turn_places_the_question_before_the_images():
    assert question_turn("Why?").content == f"Why?\n{IMAGE_TOKEN}"
    assert question_turn("Why?", 2).content == f"Why?\n{IMAGE_TOKEN}\n{IMAGE_TOKEN}"
    assert question_turn("Why?", 0).content == "Why?"
    assert question_turn("Why?", placeholder="<video>").content == "Why?\n<video>"
    with pytest.raises(ValueError, match="must not contain <image>"):
        question_turn(f"{IMAGE_TOKEN} Why?")
    sample = question_sample("Why?", [])
    assert [t.role for t in sample.turns] == ["user", "assistant"] and not sample.turns[1].content


def test_predict_prompt_equals_the_training_prompt_with_the_word_tokenizer(tmp_path):
    data = SyntheticDataModule(
        tasks={"referring": 1.0}, val_samples=4, encoding=Encoding(image_size=64)
    )
    data.setup("validate")
    sample = data.val_samples[0]
    question = sample.turns[0].content.split("\n")[0]
    trained = data.val_set[0]
    asked = predict_item(tmp_path, sample.images[0], question, image_tokens=16)
    assert prompt_of(asked) == prompt_of(trained)
    assert data.tokenizer.convert_ids_to_tokens(prompt_of(asked))[:2] == ["User", ":"]
    assert torch.equal(asked["pixel_values"], trained["pixel_values"])  # PNG is lossless


def test_predict_prompt_equals_the_training_prompt_in_the_tokenizers_template(tmp_path):
    tokenizer = build_chatml_tokenizer(vocabulary())
    tokenizer.save_pretrained(tmp_path / "tok")
    image, trained = training_turn(tmp_path, QUESTION, str(tmp_path / "tok"))
    asked = predict_item(tmp_path, image, QUESTION, tokenizer=str(tmp_path / "tok"))
    assert prompt_of(asked) == prompt_of(trained)
    tokens = tokenizer.convert_ids_to_tokens(prompt_of(asked))
    assert tokens[:2] == ["<|im_start|>", "user"] and tokens[-2:] == ["<|im_start|>", "assistant"]
    assert tokens.index("?") < tokens.index(IMAGE_TOKEN)  # question first, then the image
    plain = predict_item(
        tmp_path, image, QUESTION, tokenizer=str(tmp_path / "tok"), use_tokenizer_template=False
    )
    assert tokenizer.convert_ids_to_tokens(prompt_of(plain))[:2] == ["User", ":"]
