"""The full-size recipes compose the parts they name: built on the meta device, no download."""

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from mm15_components import MM15Model

RECIPES = Path(__file__).parents[1] / "recipes"
# Public architecture of the LLMs the recipes name (their config.json on the hub), and the
# parameter counts their model cards publish.
QWEN25 = {
    "Qwen/Qwen2.5-1.5B": (
        dict(
            hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12
        ),
        1.54e9,
    ),
    "Qwen/Qwen2.5-3B": (
        dict(
            hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16
        ),
        3.09e9,
    ),
}


def qwen2_parameters(
    hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, kv_heads=2, vocab=151936
):
    head_dim = hidden_size // num_attention_heads
    kv = kv_heads * head_dim
    attention = hidden_size * hidden_size + hidden_size + 2 * (hidden_size * kv + kv)
    attention += hidden_size * hidden_size
    mlp = 3 * hidden_size * intermediate_size
    layer = attention + mlp + 2 * hidden_size
    return vocab * hidden_size + num_hidden_layers * layer + hidden_size


@pytest.mark.parametrize("name", ["mm15_1b.yaml", "mm15_3b.yaml"])
def test_full_size_recipe_on_meta_device(name):
    recipe = yaml.safe_load((RECIPES / name).read_text())
    model_cfg = recipe["model"]["init_args"]["model"]
    vision = model_cfg["init_args"]["vision"]["init_args"]
    language = model_cfg["init_args"]["language"]["init_args"]
    assert vision["model_name"] == "ViT-H-14-378-quickgelu" and vision["pretrained"] == "dfn5b"
    arch, published = QWEN25[language["pretrained"]]
    # no download: random weights from the published architecture instead of the checkpoint
    vision.pop("pretrained")
    language.pop("pretrained")
    language["config"] = dict(
        model_type="qwen2",
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        **arch,
    )
    parser = ArgumentParser()
    parser.add_argument("--model", type=MM15Model)
    with torch.device("meta"):
        model = parser.instantiate(parser.parse_object({"model": model_cfg})).model
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    llm = qwen2_parameters(**arch)
    assert count(model.language) == llm
    assert abs(llm - published) / published < 0.01
    width = 1280  # ViT-H/14
    assert model.vision.width == width and len(model.vision.blocks) == 32
    assert 0.62e9 < count(model.vision) < 0.64e9  # ViT-H/14 image tower, ~632M
    assert model.tokens_per_image == recipe["data"]["init_args"]["image_tokens"]
    assert next(model.parameters()).device.type == "meta"
