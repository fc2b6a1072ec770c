"""Split images flow through the data pipeline into the model with matching token counts."""

import numpy as np
import pytest
import torch
from helpers import tiny_module
from PIL import Image

from mm15_components.data import Encoding
from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.schema import Sample, Turn
from mm15_components.data.synthetic.dataset import vocabulary
from mm15_components.language import build_word_tokenizer
from mm15_components.vision import AnyResSplitter


def random_image(rng, height, width):
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("overview", ["after", "before", "none"])
def test_layout_token_counts_match_model_features(overview):
    rng = np.random.default_rng()
    module = tiny_module().eval()
    splitter = AnyResSplitter(tile_size=64, min_tiles=1, max_tiles=6, overview=overview)
    encoder = SampleEncoder(
        module.tokenizer,
        64,
        module.model.tokens_per_image,
        splitter.mean,
        splitter.std,
        splitter=splitter,
    )
    shapes = [[(40, 200)], [(130, 70), (64, 64)], [(50, 90)] * 3, []]  # 3 images: not split
    samples = []
    for index, sizes in enumerate(shapes):
        images = [random_image(rng, h, w) for h, w in sizes]
        text = " ".join(["<image>"] * len(images)) + " Where is the circle?"
        samples.append(Sample([Turn("user", text), Turn("assistant", "here")], images, f"s{index}"))
    batch = collate([encoder(s) for s in samples], module.tokenizer.pad_token_id)
    expected_tiles = [
        sum(splitter.plan(h, w).num_images for h, w in sizes) if len(sizes) <= 2 else len(sizes)
        for sizes in shapes
    ]
    assert batch["tiles_per_sample"].tolist() == expected_tiles
    slots = (batch["input_ids"] == module.model.image_token_id).sum(1)
    assert slots.tolist() == [t * module.model.tokens_per_image for t in expected_tiles]
    embeds = module.model.embed(batch["input_ids"], batch["pixel_values"])
    features = module.model.encode_images(batch["pixel_values"]).flatten(0, 1)
    mask = batch["input_ids"] == module.model.image_token_id
    torch.testing.assert_close(embeds[mask], features)


def test_tile_size_must_match_encoder_input():
    module = tiny_module()
    with pytest.raises(ValueError, match="tile_size \\(378\\) must equal the encoder's image_size"):
        SampleEncoder(module.tokenizer, 64, 16, (0.5,) * 3, (0.5,) * 3, splitter=AnyResSplitter())


def test_tile_indicators_precede_each_tile():
    tokenizer = build_word_tokenizer(vocabulary())
    splitter = AnyResSplitter(tile_size=64, min_tiles=2, max_tiles=2, overview="after")
    encoder = SampleEncoder(
        tokenizer, 64, 16, splitter.mean, splitter.std, splitter=splitter, tile_indicators="index"
    )
    image = Image.new("RGB", (128, 64))  # 1 row x 2 cols + overview
    sample = Sample(
        [Turn("user", "Where is the circle? <image>"), Turn("assistant", "here")], [image], "wide"
    )
    ids = encoder(sample)["input_ids"].tolist()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    text = tokenizer.decode([i if i != image_id else tokenizer.unk_token_id for i in ids])
    runs = [chunk.strip() for chunk in text.split("<unk>") if chunk.strip()]
    assert runs[0].endswith("circle? < image 1, row 1, col 1 >")
    assert runs[1:3] == ["< image 1, row 1, col 2 >", "< image 1, overview >"]
    assert ids.count(image_id) == 3 * 16


def test_data_module_splits_when_given_a_splitter():
    from mm15_components.data import SyntheticDataModule

    splitter = AnyResSplitter(tile_size=64, min_tiles=4, max_tiles=4)
    data = SyntheticDataModule(
        val_samples=4, encoding=Encoding(splitter=splitter, tile_indicators="seps")
    )
    data.setup("fit")
    item = data.val_set[0]
    assert len(item["pixel_values"]) == 5  # 2x2 tiles of a square image + overview
    image_id = data.tokenizer.convert_tokens_to_ids("<image>")
    assert int((item["input_ids"] == image_id).sum()) == 5 * 16
