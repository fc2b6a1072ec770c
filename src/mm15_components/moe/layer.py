"""The sparse MoE feed-forward layer (MM1.5-MoE: 64 experts, top-2, dropless)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import (
    ACTIVATIONS,
    Activation,
    Backend,
    grouped_experts,
    plan_dispatch,
    reference_experts,
    resolve_backend,
)
from .router import Scoring, TopKRouter

_HF_BLOCKS: dict[str, Scoring] = {
    "OlmoeSparseMoeBlock": "softmax_then_topk",
    "Qwen2MoeSparseMoeBlock": "softmax_then_topk",
    "Qwen3MoeSparseMoeBlock": "softmax_then_topk",
    "MixtralSparseMoeBlock": "topk_then_softmax",
}


class SwiGLUMLP(nn.Module):
    """Dense ``down(silu(gate(x)) * up(x))``; the always-on shared expert of Qwen2-MoE."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEFeedForward(nn.Module):
    """Dropless top-k mixture-of-experts FFN: ``[..., hidden] -> [..., hidden]``.

    Expert weights are stacked so one grouped GEMM serves all experts: ``gate_up_proj
    [E, 2F, H]`` (gate rows, then up rows) for ``activation="swiglu"`` or ``up_proj [E, F, H]``
    for ``"gelu"``, and ``down_proj [E, H, F]``. Every token reaches its ``top_k`` experts
    (no capacity limit, nothing dropped). After a forward, ``aux_loss`` (to add to the
    training loss), ``balance_loss``, ``z_loss`` and ``tokens_per_expert`` are readable.

    ``backend``: ``"reference"`` (per-expert loop), ``"grouped_mm"`` (torch grouped GEMM with
    a fused backward), ``"workers"`` (CPU: each expert one task on single-threaded worker
    threads, same backward), ``"triton"`` (fused gather/scatter Triton kernels) or ``"auto"``
    (CUDA: by device and dtype; CPU: whichever of ``grouped_mm`` and ``workers`` measures
    faster while it runs, see ``dispatch.resolve_backend``). ``shared_intermediate_size > 0``
    adds an always-on dense SwiGLU expert, scaled by a sigmoid gate when
    ``shared_expert_gate``.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int = 64,
        top_k: int = 2,
        backend: Backend = "auto",
        activation: Activation = "swiglu",
        scoring: Scoring = "softmax_then_topk",
        renormalize: bool = True,
        jitter: float = 0.0,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
        shared_intermediate_size: int = 0,
        shared_expert_gate: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if intermediate_size < 1:
            raise ValueError(
                f"MoEFeedForward: intermediate_size must be >= 1, got {intermediate_size}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MoEFeedForward: activation must be one of {ACTIVATIONS}, got {activation!r}"
            )
        resolve_backend(backend, torch.device("cpu"), torch.float32)  # validates the name
        if shared_expert_gate and shared_intermediate_size < 1:
            raise ValueError(
                "MoEFeedForward: shared_expert_gate needs shared_intermediate_size >= 1"
            )
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_experts = num_experts
        self.top_k = top_k
        self.backend = backend
        self.activation = activation
        self.router = TopKRouter(
            hidden_size, num_experts, top_k, scoring, renormalize, jitter, balance_coef, z_coef
        )
        in_width = 2 * intermediate_size if activation == "swiglu" else intermediate_size
        self._in_name = "gate_up_proj" if activation == "swiglu" else "up_proj"
        self.register_parameter(
            self._in_name, nn.Parameter(torch.empty(num_experts, in_width, hidden_size))
        )
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        nn.init.normal_(self.in_proj, std=init_std)
        nn.init.normal_(self.down_proj, std=init_std)
        self.shared_expert = (
            SwiGLUMLP(hidden_size, shared_intermediate_size) if shared_intermediate_size else None
        )
        self.shared_expert_gate = (
            nn.Linear(hidden_size, 1, bias=False) if shared_expert_gate else None
        )

    @property
    def in_proj(self) -> nn.Parameter:
        """The stacked input projection (``gate_up_proj`` or ``up_proj``)."""
        return getattr(self, self._in_name)

    @property
    def aux_loss(self) -> Tensor | None:
        """``balance_coef * balance_loss + z_coef * z_loss`` of the last forward."""
        return self.router.aux_loss

    @property
    def balance_loss(self) -> Tensor | None:
        return self.router.balance_loss

    @property
    def z_loss(self) -> Tensor | None:
        return self.router.z_loss

    @property
    def tokens_per_expert(self) -> Tensor | None:
        """Assignments per expert (int64 ``[E]``) of the last forward."""
        return self.router.tokens_per_expert

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.hidden_size or not x.is_floating_point():
            raise ValueError(
                f"MoEFeedForward: expected a float tensor [..., {self.hidden_size}], got "
                f"{x.dtype} {tuple(x.shape)}"
            )
        tokens = x.reshape(-1, self.hidden_size)
        weights, expert_ids = self.router(tokens)
        weights = weights.to(tokens.dtype)
        w_in, w_out = self.in_proj.to(tokens.dtype), self.down_proj.to(tokens.dtype)
        backend, workers = resolve_backend(self.backend, tokens.device, tokens.dtype)
        if backend == "reference":
            out = reference_experts(tokens, weights, expert_ids, w_in, w_out, self.activation)
        else:
            plan = plan_dispatch(expert_ids, self.router.tokens_per_expert)
            tokens = tokens.contiguous()
            if backend == "triton":
                from .kernels import triton_experts  # Triton only when asked for

                out = triton_experts(tokens, weights, plan, w_in, w_out, self.activation)
            else:
                out = grouped_experts(tokens, weights, plan, w_in, w_out, self.activation, workers)
        if self.shared_expert is not None:
            shared = self.shared_expert(tokens)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(tokens)) * shared
            out = out + shared
        return out.view(x.shape)

    @classmethod
    def from_hf(
        cls,
        block: nn.Module,
        backend: Backend = "auto",
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
    ) -> MoEFeedForward:
        """Copy a transformers sparse-MoE block (OLMoE, Qwen2-MoE, Qwen3-MoE, Mixtral).

        Keeps the block's routing convention (softmax-then-top-k with its ``norm_topk_prob``,
        or Mixtral's top-k-then-softmax and jitter), its Qwen2-MoE shared expert and sigmoid
        gate, its device and dtype. The auxiliary-loss coefficients are MM1.5's, not the
        block's (transformers normalises the balance loss differently; see docs/moe.md).
        """
        kind = type(block).__name__
        if kind not in _HF_BLOCKS:
            raise TypeError(
                f"MoEFeedForward.from_hf: unsupported block {kind}; supported: {sorted(_HF_BLOCKS)}"
            )
        router, experts = block.gate, block.experts
        hidden_act = getattr(getattr(experts, "config", None), "hidden_act", "silu")
        if hidden_act not in ("silu", "swish"):
            raise ValueError(
                f"MoEFeedForward.from_hf: {kind} uses hidden_act={hidden_act!r}; only SwiGLU "
                "(silu) experts are supported"
            )
        num_experts, two_f, hidden = experts.gate_up_proj.shape
        shared = getattr(block, "shared_expert", None)
        moe = cls(
            hidden,
            two_f // 2,
            num_experts=num_experts,
            top_k=router.top_k,
            backend=backend,
            scoring=_HF_BLOCKS[kind],
            renormalize=getattr(router, "norm_topk_prob", True),
            jitter=getattr(block, "jitter_noise", 0.0),
            balance_coef=balance_coef,
            z_coef=z_coef,
            shared_intermediate_size=shared.gate_proj.out_features if shared is not None else 0,
            shared_expert_gate=getattr(block, "shared_expert_gate", None) is not None,
        ).to(device=experts.gate_up_proj.device, dtype=experts.gate_up_proj.dtype)
        with torch.no_grad():
            moe.router.weight.copy_(router.weight)
            moe.gate_up_proj.copy_(experts.gate_up_proj)
            moe.down_proj.copy_(experts.down_proj)
            if shared is not None:
                moe.shared_expert.load_state_dict(shared.state_dict())
            if moe.shared_expert_gate is not None:
                moe.shared_expert_gate.load_state_dict(block.shared_expert_gate.state_dict())
        return moe

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, intermediate_size={self.intermediate_size}, "
            f"num_experts={self.num_experts}, top_k={self.top_k}, backend={self.backend}, "
            f"activation={self.activation}"
        )
