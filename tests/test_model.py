import pytest
import torch
from helpers import tiny_module

from mm15_components.language import IMAGE_TOKEN


@pytest.fixture
def module():
    torch.manual_seed(0)
    return tiny_module().eval()


def test_image_features_land_at_placeholders_in_a_mixed_batch(module):
    model = module.model
    n = model.tokens_per_image
    img = model.image_token_id
    # sample 0: two images, sample 1: none, sample 2: one image (padded rows)
    rows = [
        [5, *[img] * n, 6, *[img] * n, 7],
        [5, 6, 7, 8],
        [9, *[img] * n, 10],
    ]
    length = max(map(len, rows))
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    pixels = torch.randn(3, 3, 64, 64)
    embeds = model.embed(ids, pixels)
    features = model.encode_images(pixels)
    tokens = model.language.embed(ids)
    expected_runs = {(0, 1): features[0], (0, 2 + n): features[1], (2, 1): features[2]}
    for (row, start), feats in expected_runs.items():
        torch.testing.assert_close(embeds[row, start : start + n], feats)
    text = ids != img
    torch.testing.assert_close(embeds[text], tokens[text])


def test_placeholder_and_image_count_mismatch_is_named(module):
    model = module.model
    ids = torch.tensor([[5, *[model.image_token_id] * model.tokens_per_image, 6]])
    with pytest.raises(ValueError, match=r"16 image placeholder tokens .* 2 image\(s\)"):
        model.embed(ids, torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="no images"):
        model.embed(ids, None)


def naive_greedy(model, prompt: torch.Tensor, pixels: torch.Tensor, steps: int, eos: int):
    """Greedy decoding by re-running the full sequence each step: no cache, no padding."""
    ids = prompt.clone()
    out = []
    for _ in range(steps):
        logits = model(ids[None], None, pixels)
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token == eos:
            break
        ids = torch.cat([ids, torch.tensor([token])])
    return out


def test_batched_generation_equals_naive_greedy_per_sample(module):
    tok = module.tokenizer
    n = module.model.tokens_per_image
    img = module.model.image_token_id
    prompts = [
        tok(f"User: {IMAGE_TOKEN} Where is the red circle?", add_special_tokens=False).input_ids,
        tok(f"User: {IMAGE_TOKEN} circle?", add_special_tokens=False).input_ids,
    ]
    prompts = [[t for i in p for t in ([img] * n if i == img else [i])] for p in prompts]
    length = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    pixels = torch.randn(2, 3, 64, 64)
    module.max_new_tokens = 6
    new = module.model.generate(
        ids,
        mask,
        pixels,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    for row, prompt in enumerate(prompts):
        expected = naive_greedy(
            module.model, torch.tensor(prompt), pixels[row : row + 1], 6, tok.eos_token_id
        )
        got = new[row].tolist()[: len(expected)]
        assert got == expected


def attention_kernels_run(model, ids, pixels, autocast: bool) -> set[str]:
    """Names of the attention ops a forward+backward of ``model`` runs."""
    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile,
        torch.autocast("cpu", torch.bfloat16, enabled=autocast),
    ):
        model(ids, None, pixels).float().sum().backward()
    return {e.key for e in profile.key_averages() if "attention" in e.key or "softmax" in e.key}


def test_cpu_bf16_training_takes_the_math_attention_path_and_tracks_fp32(module):
    model = module.model.train()
    ids = torch.tensor([[5, *[model.image_token_id] * model.tokens_per_image, 6, 7, 8]])
    pixels = torch.randn(1, 3, 64, 64)
    fused = "aten::_scaled_dot_product_flash_attention_for_cpu"
    assert fused in attention_kernels_run(model, ids, pixels, autocast=False)
    bf16_ops = attention_kernels_run(model, ids, pixels, autocast=True)
    assert fused not in bf16_ops and "aten::_softmax" in bf16_ops
    model.cpu_bf16_attention = "torch"  # torch's own choice: the fused kernel
    assert fused in attention_kernels_run(model, ids, pixels, autocast=True)
    model.cpu_bf16_attention = "math"
    with torch.no_grad():
        reference = model(ids, None, pixels)
        with torch.autocast("cpu", torch.bfloat16):
            mixed = model(ids, None, pixels)
    torch.testing.assert_close(mixed.float(), reference, atol=0.1, rtol=0.05)
