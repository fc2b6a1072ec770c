"""The real model files build what they name: on the meta device, no download; and the SFT
stage splits images as MM1.5 does."""

from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from mm15_components import MM15Model
from mm15_components.data import ConversationDataModule, Encoding, Mixture
from mm15_components.moe.layer import MoEFeedForward
from mm15_components.vision import AnyResSplitter

RECIPES = Path(__file__).parents[1] / "recipes"
# Parameter counts the model cards of the LLMs publish, and the public architecture of the
# ones the model files name (their config.json on the hub).
PUBLISHED = {"Qwen/Qwen2.5-1.5B": 1.54e9, "Qwen/Qwen2.5-3B": 3.09e9}
QWEN25 = {
    "Qwen/Qwen2.5-1.5B": dict(hidden=1536, intermediate=8960, layers=28, heads=12),
    "Qwen/Qwen2.5-3B": dict(hidden=2048, intermediate=11008, layers=36, heads=16),
}


def qwen2_parameters(hidden, intermediate, layers, heads, kv_heads=2, vocab=151936) -> int:
    """Qwen2's parameter count by hand: q/k/v with biases, o, SwiGLU MLP, two norms per layer,
    tied embeddings, the final norm."""
    kv = kv_heads * hidden // heads
    attention = hidden * hidden + hidden + 2 * (hidden * kv + kv) + hidden * hidden
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden + layers * layer + hidden


def model_config(name: str) -> dict:
    return yaml.safe_load((RECIPES / "models" / name).read_text())["model"]["init_args"]["model"]


def build_on_meta(model_cfg: dict) -> MM15Model:
    """The model file's model on the meta device, with random weights instead of downloads
    (what snippets/random_init.yaml does)."""
    for part in ("vision", "language"):
        model_cfg["init_args"][part]["init_args"]["pretrained"] = None
    parser = ArgumentParser()
    parser.add_argument("--model", type=MM15Model)
    with torch.device("meta"):
        return parser.instantiate(parser.parse_object({"model": model_cfg})).model


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["mm15_1b.yaml", "mm15_3b.yaml"])
def test_real_model_on_meta_device(name):
    model_cfg = model_config(name)
    vision = model_cfg["init_args"]["vision"]["init_args"]
    language = model_cfg["init_args"]["language"]["init_args"]
    assert vision["model_name"] == "ViT-H-14-378-quickgelu" and vision["pretrained"] == "dfn5b"
    llm = language["pretrained"]
    stated = language["config"]
    arch = QWEN25[llm]
    assert (stated["hidden_size"], stated["intermediate_size"]) == (
        arch["hidden"],
        arch["intermediate"],
    )
    assert (stated["num_hidden_layers"], stated["num_attention_heads"]) == (
        arch["layers"],
        arch["heads"],
    )
    model = build_on_meta(model_cfg)
    expected = qwen2_parameters(**arch)
    assert count(model.language) == expected
    assert abs(expected - PUBLISHED[llm]) / PUBLISHED[llm] < 0.01
    assert model.vision.width == 1280 and len(model.vision.blocks) == 32
    assert 0.62e9 < count(model.vision) < 0.64e9  # ViT-H/14 image tower, ~632M
    assert model.tokens_per_image == model.connector.num_queries == 144
    assert next(model.parameters()).device.type == "meta"
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights


def test_moe_model_upcycles_every_second_layer():
    model = build_on_meta(model_config("mm15_1b_moe.yaml"))
    layers = model.language.model.model.layers
    moe = [i for i, layer in enumerate(layers) if isinstance(layer.mlp, MoEFeedForward)]
    assert moe == list(range(1, 28, 2))
    experts = layers[1].mlp
    assert (experts.num_experts, experts.top_k) == (64, 2)
    assert (experts.router.balance_coef, experts.router.z_coef) == (0.01, 0.001)
    dense_ffn = 3 * 1536 * 8960
    assert count(experts) == 64 * dense_ffn + 64 * 1536  # experts and the router
    assert count(model.vision) == count(build_on_meta(model_config("mm15_1b.yaml")).vision)


def test_sft_stage_splits_images_like_mm15():
    model = build_on_meta(model_config("mm15_1b.yaml"))
    stage = yaml.safe_load((RECIPES / "stages" / "sft.yaml").read_text())
    model.vision.resize_position_embedding(
        stage["model"]["init_args"]["model"]["init_args"]["vision"]["init_args"]["image_size"]
    )
    data_cfg = stage["data"]["init_args"]
    parser = ArgumentParser()
    parser.add_argument("--splitter", type=AnyResSplitter)
    parser.add_argument("--train", type=Mixture)
    given = {"splitter": data_cfg["encoding"]["splitter"], "train": data_cfg["train"]}
    built = parser.instantiate(parser.parse_object(given))
    splitter = built.splitter
    # MM1.5's final splitting (MM15_FACTS section 2) with the C-Abstractor's 144 tokens
    assert (splitter.min_tiles, splitter.max_tiles, splitter.overview) == (4, 9, "after")
    assert splitter.max_images_to_split == 2 and data_cfg["encoding"]["tile_indicators"] == "index"
    assert splitter.tile_size == model.vision.image_size == 672
    assert model.vision.grid_size == (48, 48) and model.connector.pos_grid == (27, 27)

    # A 1000 x 700 (width x height) photo, by hand: grids that cover it without downscaling
    # need rows >= 2 (2*672 >= 700) and cols >= 2 (2*672 >= 1000). 2x2 scales by 1344/1000 and
    # pads 1344 x 403.2; 2x3 scales by 1344/700 to 1344 x 1920 and pads 1344 x 96; 2x4, 3x2
    # and 3x3 pad more. Least padding: 2x3, so 6 tiles + overview = 7 images.
    layout = splitter.plan(700, 1000)
    assert (layout.rows, layout.cols) == (2, 3)
    assert layout.resized_size == (1344, 1920) and layout.padding == (0, 96)
    assert layout.num_tokens(model.tokens_per_image) == 7 * 144

    # The stage's data with the model's geometry (word tokenizer instead of a download, the
    # stand-ins rendered at 1344 px as data/synthetic.yaml does) emits exactly the tiles and
    # image tokens the layout promises: a 1344 px square is 2x2 tiles of 672 + the overview.
    data = ConversationDataModule(
        built.train,
        render_size=1344,
        train_samples=1,
        val_samples=64,
        encoding=Encoding(splitter=splitter, tile_indicators="index"),
    )
    data.adopt_geometry(model)
    assert (data.image_size, data.image_tokens) == (672, 144)
    data.setup("validate")
    square = splitter.plan(1344, 1344)
    assert (square.rows, square.cols, square.num_images) == (2, 2, 5)
    item = next(data.val_set[i] for i in range(64) if data.val_set.draw(i)[0] == 0)  # general
    assert item["pixel_values"].shape == (5, 3, 672, 672)
    image_id = data.tokenizer.convert_tokens_to_ids("<image>")
    assert int((item["input_ids"] == image_id).sum()) == square.num_tokens(144) == 5 * 144
