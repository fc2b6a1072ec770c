"""Tiny builders shared by the tests."""

from mm15_components import MM15Model, MM15Module
from mm15_components.connectors import MLPProjector
from mm15_components.language import CausalLM, build_word_tokenizer
from mm15_components.vision import OpenCLIPVisionEncoder

TINY_LLAMA = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)


def tiny_model(pool: int = 2) -> MM15Model:
    return MM15Model(
        OpenCLIPVisionEncoder("mm15-tiny-vit"),
        CausalLM(config=TINY_LLAMA),
        lambda i, o: MLPProjector(i, o, pool=pool),
    )


def tiny_module(words=("Where", "is", "the", "red", "circle", "User", "Assistant")) -> MM15Module:
    return MM15Module(tiny_model(), build_word_tokenizer(words))
