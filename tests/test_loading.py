"""Real loading paths (what the full-size recipes use), exercised on tiny local weights."""

import open_clip
import pytest
import torch
from helpers import TINY_LLAMA
from transformers import AutoConfig, AutoModelForCausalLM

from mm15_components.language import CausalLM, build_word_tokenizer, load_tokenizer
from mm15_components.vision import OpenCLIPVisionEncoder


def test_language_model_from_a_local_directory(tmp_path):
    config = dict(TINY_LLAMA)
    reference = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(config.pop("model_type"), **config)
    )
    reference.save_pretrained(tmp_path)
    loaded = CausalLM(pretrained=str(tmp_path))
    ids = torch.randint(0, reference.config.vocab_size, (2, 9))
    expected = reference(input_ids=ids).logits
    torch.testing.assert_close(loaded(loaded.embed(ids)), expected, rtol=0, atol=0)


def test_vision_tower_from_a_local_open_clip_checkpoint(tmp_path):
    clip = open_clip.create_model("mm15-tiny-vit")
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    encoder = OpenCLIPVisionEncoder("mm15-tiny-vit", pretrained=str(path), feature_layer=-2)
    images = torch.randn(3, 3, 64, 64)
    # open_clip's own intermediates of block 2 (of 4), without the class token
    expected = clip.visual.forward_intermediates(
        images, indices=[2], intermediates_only=True, output_fmt="NLC"
    )["image_intermediates"][0]
    torch.testing.assert_close(encoder(images), expected)
    assert len(encoder.blocks) == 3  # later blocks are dropped


def test_position_embedding_interpolation():
    torch.manual_seed(0)
    encoder = OpenCLIPVisionEncoder("mm15-tiny-vit")
    native = encoder.visual.positional_embedding.detach().clone()
    encoder.resize_position_embedding(64)  # to the native grid: identity
    torch.testing.assert_close(encoder.visual.positional_embedding, native)
    encoder.resize_position_embedding(128)
    assert encoder.grid_size == (16, 16)
    assert encoder(torch.randn(1, 3, 128, 128)).shape == (1, 256, encoder.width)
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        encoder.resize_position_embedding(100)


def test_tokenizer_saved_and_loaded_back(tmp_path):
    built = build_word_tokenizer(["Where", "is", "the", "circle"])
    built.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    text = "<image> Where is the circle? [12, 999, 0, 5]"
    assert loaded(text).input_ids == built(text).input_ids
    assert len(loaded) == len(built)


def test_unknown_names_are_reported():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        OpenCLIPVisionEncoder("ViT-Q-99")
    with pytest.raises(ValueError, match="cannot load language model 'no-such-org/no-such-llm'"):
        CausalLM(pretrained="no-such-org/no-such-llm")
    with pytest.raises(ValueError, match="cannot load tokenizer"):
        load_tokenizer("no-such-org/no-such-llm")
    with pytest.raises(ValueError, match="needs `pretrained` weights or a `config`"):
        CausalLM(pretrained=False)


def test_stated_architecture_is_checked_against_the_checkpoint(tmp_path):
    config = dict(TINY_LLAMA)
    reference = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(config.pop("model_type"), **config)
    )
    reference.save_pretrained(tmp_path)
    loaded = CausalLM(pretrained=str(tmp_path), config=TINY_LLAMA)  # agrees: loads
    assert loaded.model.get_input_embeddings().weight.dtype == torch.float32
    wider = dict(TINY_LLAMA, hidden_size=96, num_key_value_heads=4)
    with pytest.raises(ValueError, match="hidden_size: stated 96, checkpoint 64"):
        CausalLM(pretrained=str(tmp_path), config=wider)
    # pretrained false (or null) builds the stated architecture with random weights instead
    random = CausalLM(pretrained=False, config=TINY_LLAMA)
    assert not torch.equal(random.embed(torch.arange(5)), loaded.embed(torch.arange(5)))


def test_a_shallow_language_model_keeps_its_first_layers(tmp_path):
    config = dict(TINY_LLAMA, num_hidden_layers=4)
    deep = CausalLM(config=config)
    deep.model.save_pretrained(tmp_path)
    shallow = CausalLM(pretrained=str(tmp_path), num_layers=2)
    assert len(shallow.layers) == 2 and shallow.model.config.num_hidden_layers == 2
    ids = torch.randint(0, TINY_LLAMA["max_position_embeddings"], (1, 7))
    # the same first two layers, then the final norm and head: run the deep model's parts
    decoder = deep.model.get_decoder()
    decoder.layers = decoder.layers[:2]
    deep.model.config.num_hidden_layers = 2
    torch.testing.assert_close(shallow(shallow.embed(ids)), deep(deep.embed(ids)))
    with pytest.raises(ValueError, match="num_layers=5 out of range for 4"):
        CausalLM(config=config, num_layers=5)


def test_vocabulary_fits_the_tokenizer(tmp_path):
    config = dict(TINY_LLAMA, vocab_size=500)
    built = CausalLM(config=config)
    built.resize_vocab(300)  # random weights: exactly the tokenizer's size
    assert built.model.get_input_embeddings().num_embeddings == 300
    built.model.save_pretrained(tmp_path)
    loaded = CausalLM(pretrained=str(tmp_path))
    loaded.resize_vocab(200)  # a padded pretrained vocabulary is kept
    assert loaded.model.get_input_embeddings().num_embeddings == 300
    loaded.resize_vocab(310)  # added tokens grow it
    assert loaded.model.get_input_embeddings().num_embeddings == 310
