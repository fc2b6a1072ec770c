"""Image geometry flows from the model to the data: unset values are the model's, stated ones
must agree, and a disagreement names both keys and values."""

import pytest
from helpers import tiny_model

from mm15_components.data import (
    ConversationDataModule,
    Encoding,
    Mixture,
    Source,
    SyntheticDataModule,
)
from mm15_components.vision import AnyResSplitter


def test_unset_values_come_from_the_model():
    model = tiny_model(pool=4)  # 8x8 patches pooled by 4: 4 tokens per image
    data = ConversationDataModule(Mixture([Source("general")]), train_samples=2, val_samples=2)
    assert data.image_tokens == 16  # standalone (no model yet)
    data.adopt_geometry(model)
    assert (data.image_size, data.image_tokens) == (64, 4) == (64, model.tokens_per_image)
    assert data.mean == model.vision.mean and data.std == model.vision.std
    data.setup("fit")
    image_id = data.tokenizer.convert_tokens_to_ids("<image>")
    item = data.train_set[0]
    assert int((item["input_ids"] == image_id).sum()) == 4 * len(item["pixel_values"])


def test_stated_values_that_disagree_are_named():
    model = tiny_model(pool=2)  # 16 tokens per image
    with pytest.raises(ValueError) as error:
        SyntheticDataModule(val_samples=2, encoding=Encoding(image_tokens=64)).adopt_geometry(model)
    assert str(error.value).startswith(
        "data.init_args.encoding.image_tokens=64 disagrees with the model's tokens_per_image "
        "(the connector's)=16"
    )
    with pytest.raises(ValueError, match=r"image_size=32 disagrees .* input size\)=64"):
        SyntheticDataModule(val_samples=2, encoding=Encoding(image_size=32)).adopt_geometry(model)
    gray = SyntheticDataModule(val_samples=2, encoding=Encoding(mean=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match=r"encoding.mean=\[0.5, 0.5, 0.5\] disagrees"):
        gray.adopt_geometry(model)
    agreeing = SyntheticDataModule(val_samples=2, encoding=Encoding(image_size=64, image_tokens=16))
    agreeing.adopt_geometry(model)  # stated and equal: fine


def test_a_splitter_for_another_tile_size_is_named():
    data = ConversationDataModule(
        Mixture([Source("general")]),
        val_samples=2,
        encoding=Encoding(splitter=AnyResSplitter(tile_size=378)),
    )
    with pytest.raises(ValueError) as error:
        data.adopt_geometry(tiny_model())
    assert str(error.value).startswith(
        "data.init_args.encoding.splitter.init_args.tile_size=378 disagrees with the model's "
        "vision.image_size (the encoder's input size)=64"
    )
