"""Turn a dense transformers causal LM into an MM1.5-style MoE LM, and collect its aux losses."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .layer import MoEFeedForward


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    get_decoder = getattr(model, "get_decoder", None)
    layers = getattr(get_decoder(), "layers", None) if callable(get_decoder) else None
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"convert_to_moe: {type(model).__name__} has no decoder layer list "
            "(expected model.get_decoder().layers, as in Llama/Qwen2 causal LMs)"
        )
    return layers


def _check_dense_mlp(mlp: nn.Module, index: int) -> None:
    for name in ("gate_proj", "up_proj", "down_proj"):
        projection = getattr(mlp, name, None)
        if not isinstance(projection, nn.Linear):
            raise TypeError(
                f"convert_to_moe: layer {index} MLP ({type(mlp).__name__}) has no nn.Linear "
                f"{name}; only gated (SwiGLU) MLPs can be converted"
            )
        if projection.bias is not None:
            raise ValueError(
                f"convert_to_moe: layer {index} MLP {name} has a bias; experts have none"
            )


def _noisy_copy(weight: Tensor, noise: float) -> Tensor:
    """``weight`` plus Gaussian noise of ``noise`` times its standard deviation."""
    if noise == 0:
        return weight
    return weight + noise * weight.std() * torch.randn_like(weight)


@torch.no_grad()
def convert_to_moe(
    model: nn.Module,
    every: int = 2,
    num_experts: int = 64,
    top_k: int = 2,
    init: Literal["upcycle", "random"] = "upcycle",
    noise: float = 0.0,
    **moe_kwargs,
) -> nn.Module:
    """Replace the MLP of every ``every``-th decoder layer (indices ``every-1, 2*every-1, ...``,
    as in Qwen2-MoE's ``decoder_sparse_step``) with a :class:`MoEFeedForward`, in place.

    ``init="upcycle"`` copies the dense gate/up/down weights into every expert (sparse
    upcycling), optionally perturbed by Gaussian noise of ``noise`` times each weight's
    standard deviation so the experts can diverge; the router starts random. With no noise
    and renormalised top-k weights the converted model computes exactly the dense model.
    ``init="random"`` draws experts from N(0, initializer_range). Extra keyword arguments go
    to :class:`MoEFeedForward` (backend, scoring, coefficients, ...). Returns ``model``.
    """
    if every < 1:
        raise ValueError(f"convert_to_moe: every must be >= 1, got {every}")
    if init not in ("upcycle", "random"):
        raise ValueError(f"convert_to_moe: init must be 'upcycle' or 'random', got {init!r}")
    if noise < 0:
        raise ValueError(f"convert_to_moe: noise must be >= 0, got {noise}")
    layers = _decoder_layers(model)
    text_config = model.config.get_text_config()
    if text_config.hidden_act not in ("silu", "swish"):
        raise ValueError(
            f"convert_to_moe: hidden_act={text_config.hidden_act!r}; experts are SwiGLU (silu)"
        )
    init_std = getattr(text_config, "initializer_range", 0.02)
    for index, layer in enumerate(layers):
        if index % every != every - 1:
            continue
        dense = layer.mlp
        _check_dense_mlp(dense, index)
        reference = dense.gate_proj.weight
        moe = MoEFeedForward(
            dense.gate_proj.in_features,
            dense.gate_proj.out_features,
            num_experts=num_experts,
            top_k=top_k,
            init_std=init_std,
            **moe_kwargs,
        ).to(device=reference.device, dtype=reference.dtype)
        if init == "upcycle":
            upcycle_experts(
                moe, dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight, noise
            )
        layer.mlp = moe
    return model


@torch.no_grad()
def upcycle_experts(
    moe: MoEFeedForward, gate: Tensor, up: Tensor, down: Tensor, noise: float = 0.0
) -> None:
    """Copy a dense SwiGLU FFN (``gate``/``up`` ``[F, H]``, ``down`` ``[H, F]``) into every
    expert of ``moe`` (sparse upcycling), each copy with its own noise (see
    ``convert_to_moe``). The router is left as it is."""
    gate_up = torch.cat([gate, up])
    if moe.activation != "swiglu" or gate_up.shape != moe.gate_up_proj.shape[1:]:
        raise ValueError(
            f"cannot upcycle a dense FFN of gate/up {tuple(gate.shape)} and down "
            f"{tuple(down.shape)} into SwiGLU experts of {tuple(moe.in_proj.shape[1:])}"
        )
    for expert in range(moe.num_experts):
        moe.gate_up_proj[expert].copy_(_noisy_copy(gate_up, noise))
        moe.down_proj[expert].copy_(_noisy_copy(down, noise))


def _moe_layers(model: nn.Module) -> dict[str, MoEFeedForward]:
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MoEFeedForward)}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no MoEFeedForward layer")
    return layers


def moe_aux_loss(model: nn.Module) -> Tensor:
    """Sum over MoE layers of their weighted auxiliary losses from the last forward."""
    losses = [m.aux_loss for m in _moe_layers(model).values() if m.aux_loss is not None]
    if not losses:
        raise ValueError("moe_aux_loss: no MoE layer has run a forward yet")
    return torch.stack(losses).sum()


def moe_load_stats(model: nn.Module) -> dict[str, Tensor]:
    """Tokens routed to each expert in the last forward, per MoE layer (by module name)."""
    return {
        name: m.tokens_per_expert
        for name, m in _moe_layers(model).items()
        if m.tokens_per_expert is not None
    }
