"""The full-size recipes compose the parts they name: built on the meta device, no download."""

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from mm15_components import MM15Model
from mm15_components.data import SyntheticDataModule
from mm15_components.vision import AnyResSplitter

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


def build_meta_model(model_cfg: dict, arch: dict) -> MM15Model:
    """The recipe's model on the meta device, with random weights instead of downloads."""
    vision = model_cfg["init_args"]["vision"]["init_args"]
    language = model_cfg["init_args"]["language"]["init_args"]
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
        return parser.instantiate(parser.parse_object({"model": model_cfg})).model


@pytest.mark.parametrize("name", ["mm15_1b.yaml", "mm15_3b.yaml"])
def test_full_size_recipe_on_meta_device(name):
    recipe = yaml.safe_load((RECIPES / name).read_text())
    model_cfg = recipe["model"]["init_args"]["model"]
    vision = model_cfg["init_args"]["vision"]["init_args"]
    language = model_cfg["init_args"]["language"]["init_args"]
    assert vision["model_name"] == "ViT-H-14-378-quickgelu" and vision["pretrained"] == "dfn5b"
    arch, published = QWEN25[language["pretrained"]]
    model = build_meta_model(model_cfg, arch)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    llm = qwen2_parameters(**arch)
    assert count(model.language) == llm
    assert abs(llm - published) / published < 0.01
    width = 1280  # ViT-H/14
    assert model.vision.width == width and len(model.vision.blocks) == 32
    assert 0.62e9 < count(model.vision) < 0.64e9  # ViT-H/14 image tower, ~632M
    assert model.tokens_per_image == recipe["data"]["init_args"]["image_tokens"]
    assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("name", ["mm15_1b.yaml", "mm15_3b.yaml"])
def test_full_size_recipe_splits_images_like_mm15(name):
    recipe = yaml.safe_load((RECIPES / name).read_text())
    model_cfg = recipe["model"]["init_args"]["model"]
    arch, _ = QWEN25[model_cfg["init_args"]["language"]["init_args"]["pretrained"]]
    model = build_meta_model(model_cfg, arch)
    data_cfg = recipe["data"]["init_args"]
    parser = ArgumentParser()
    parser.add_argument("--splitter", type=AnyResSplitter)
    splitter = parser.instantiate(parser.parse_object({"splitter": data_cfg["splitter"]})).splitter
    # MM1.5's final splitting (MM15_FACTS section 2) with the C-Abstractor's 144 tokens
    assert (splitter.min_tiles, splitter.max_tiles, splitter.overview) == (4, 9, "after")
    assert splitter.max_images_to_split == 2 and data_cfg["tile_indicators"] == "index"
    assert model.connector.num_queries == model.tokens_per_image == 144
    assert splitter.tile_size == data_cfg["image_size"] == model.vision.image_size == 378
    assert model.connector.pos_grid == model.vision.grid_size == (27, 27)
    assert splitter.mean == pytest.approx(model.vision.mean)
    assert splitter.std == pytest.approx(model.vision.std)

    # A 1000 x 700 (width x height) photo, by hand: grids that cover it without downscaling
    # need rows >= 2 (2*378 >= 700) and cols >= 3 (3*378 >= 1000): 2x3, 2x4 and 3x3.
    # 2x3 and 2x4 scale by 756/700 to 756 x 1080 and pad 54 / 432 columns; 3x3 scales by
    # 1134/1000 and pads 340.2 rows. Least padding: 2x3, so 6 tiles + overview = 7 images.
    layout = splitter.plan(700, 1000)
    assert (layout.rows, layout.cols) == (2, 3)
    assert layout.resized_size == (756, 1080) and layout.padding == (0, 54)
    assert layout.num_images == 7
    assert layout.num_tokens(model.tokens_per_image) == 7 * 144

    # The data module built from the recipe (word tokenizer instead of a download) emits
    # exactly the tiles and image tokens the layout promises for its 378 px images.
    data_cfg = {k: v for k, v in data_cfg.items() if k not in ("tokenizer", "splitter")}
    data = SyntheticDataModule(**data_cfg, splitter=splitter, train_samples=1, val_samples=1)
    data.setup("validate")
    item = data.val_set[0]
    square = splitter.plan(378, 378)  # a small square: 2x2 + overview
    assert (square.rows, square.cols, square.num_images) == (2, 2, 5)
    assert item["pixel_values"].shape == (5, 3, 378, 378)
    image_id = data.tokenizer.convert_tokens_to_ids("<image>")
    assert int((item["input_ids"] == image_id).sum()) == square.num_tokens(144) == 5 * 144
