"""convert_to_moe on tiny transformers causal LMs built locally."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from mm15_components.moe.convert import convert_to_moe, moe_aux_loss, moe_load_stats
from mm15_components.moe.layer import MoEFeedForward

TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _tokens() -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (2, 10))


def test_upcycled_llama_computes_the_dense_model():
    dense = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    tokens = _tokens()
    with torch.no_grad():
        expected = dense(tokens).logits
    moe = convert_to_moe(dense, every=2, num_experts=4, top_k=2, init="upcycle")
    assert [isinstance(layer.mlp, MoEFeedForward) for layer in moe.model.layers] == [
        False,
        True,
        False,
        True,
    ]
    with torch.no_grad():
        got = moe(tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_noise_and_random_init_make_distinct_experts():
    for init, noise in (("upcycle", 0.1), ("random", 0.0)):
        model = convert_to_moe(
            LlamaForCausalLM(LlamaConfig(**TINY)), num_experts=3, init=init, noise=noise
        )
        experts = model.model.layers[1].mlp.gate_up_proj
        assert not torch.equal(experts[0], experts[1])


def test_converted_qwen2_trains_with_aux_loss_and_reports_load():
    model = convert_to_moe(Qwen2ForCausalLM(Qwen2Config(**TINY)), num_experts=4, top_k=2)
    tokens = _tokens()
    output = model(tokens, labels=tokens)
    aux = moe_aux_loss(model)
    layers = [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, MoEFeedForward)]
    torch.testing.assert_close(aux, layers[0].aux_loss + layers[1].aux_loss)
    (output.loss + aux).backward()
    assert all(layer.router.weight.grad.abs().sum() > 0 for layer in layers)
    stats = moe_load_stats(model)
    assert sorted(stats) == ["model.layers.1.mlp", "model.layers.3.mlp"]
    assert all(int(counts.sum()) == tokens.numel() * 2 for counts in stats.values())


def test_convert_rejects_bad_input():
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    with pytest.raises(ValueError, match="init"):
        convert_to_moe(model, init="copy")
    with pytest.raises(ValueError, match="no MoEFeedForward"):
        moe_aux_loss(model)
    with pytest.raises(ValueError, match="hidden_act"):
        convert_to_moe(LlamaForCausalLM(LlamaConfig(**TINY, hidden_act="gelu")))
    with pytest.raises(TypeError, match="decoder layer list"):
        convert_to_moe(torch.nn.Linear(2, 2))
