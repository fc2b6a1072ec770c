"""Top-k token router with the Switch/GShard load-balance loss and the ST-MoE z-loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Scoring = Literal["softmax_then_topk", "topk_then_softmax"]
SCORINGS: tuple[str, ...] = ("softmax_then_topk", "topk_then_softmax")


def count_tokens_per_expert(expert_ids: Tensor, num_experts: int) -> Tensor:
    """Assignments per expert as int64 ``[E]``, computed on the device without a host sync.

    ``bincount`` would size its output from the data (a sync, and a graph break under
    ``torch.compile``); a fixed-size ``scatter_add_`` of ones does not.
    """
    flat = expert_ids.reshape(-1)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def load_balance_loss(probs: Tensor, tokens_per_expert: Tensor, top_k: int) -> Tensor:
    """Switch/GShard balance loss ``E * sum_i f_i * P_i``.

    ``f_i`` is the share of the ``T * top_k`` assignments that went to expert ``i`` (no
    gradient) and ``P_i`` the mean router probability of expert ``i``. Perfectly uniform
    routing gives 1.0 for every ``top_k``; an empty batch gives 0.
    """
    num_tokens, num_experts = probs.shape
    dispatch_share = tokens_per_expert.to(probs.dtype) / max(num_tokens * top_k, 1)
    mean_probs = probs.sum(dim=0) / max(num_tokens, 1)
    return num_experts * torch.sum(dispatch_share * mean_probs)


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE z-loss ``mean_t logsumexp(logits_t)^2``: keeps router logits small and stable."""
    return torch.logsumexp(logits, dim=-1).square().sum() / max(logits.shape[0], 1)


class TopKRouter(nn.Module):
    """Scores ``T`` tokens against ``E`` experts and keeps the ``top_k`` best per token.

    Logits are computed in fp32 (autocast off) because routing decisions and the softmax are
    sensitive to rounding. After each forward the module holds, for the loss and for logging:
    ``balance_loss``, ``z_loss``, ``aux_loss`` (``balance_coef * balance + z_coef * z``) and
    ``tokens_per_expert`` (int64 ``[E]``).

    ``scoring="softmax_then_topk"`` (OLMoE, Qwen-MoE) softmaxes over all experts and keeps the
    top-k probabilities, renormalised to sum to 1 when ``renormalize``;
    ``"topk_then_softmax"`` (Mixtral) softmaxes over the k best logits only. ``jitter`` is
    Switch-style multiplicative noise on the router input, applied in training only.
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        scoring: Scoring = "softmax_then_topk",
        renormalize: bool = True,
        jitter: float = 0.0,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
    ) -> None:
        super().__init__()
        if hidden_size < 1 or num_experts < 1:
            raise ValueError(
                f"TopKRouter: hidden_size and num_experts must be >= 1, got {hidden_size} and "
                f"{num_experts}"
            )
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"TopKRouter: top_k must be in [1, {num_experts}], got {top_k}")
        if scoring not in SCORINGS:
            raise ValueError(f"TopKRouter: scoring must be one of {SCORINGS}, got {scoring!r}")
        if jitter < 0 or balance_coef < 0 or z_coef < 0:
            raise ValueError(
                "TopKRouter: jitter, balance_coef and z_coef must be >= 0, got "
                f"{jitter}, {balance_coef}, {z_coef}"
            )
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.top_k = top_k
        self.scoring = scoring
        self.renormalize = renormalize
        self.jitter = jitter
        self.balance_coef = balance_coef
        self.z_coef = z_coef
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        nn.init.normal_(self.weight, std=hidden_size**-0.5)
        self.balance_loss: Tensor | None = None
        self.z_loss: Tensor | None = None
        self.aux_loss: Tensor | None = None
        self.tokens_per_expert: Tensor | None = None

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Route ``hidden [T, H]``; returns fp32 ``weights [T, k]`` and int64 ``ids [T, k]``."""
        if hidden.dim() != 2 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"TopKRouter: expected hidden of shape [T, {self.hidden_size}], "
                f"got {tuple(hidden.shape)}"
            )
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            router_input = hidden.float()
            if self.training and self.jitter > 0:
                noise = torch.empty_like(router_input).uniform_(1 - self.jitter, 1 + self.jitter)
                router_input = router_input * noise
            logits = F.linear(router_input, self.weight.float())
            probs = logits.softmax(dim=-1)
            if self.scoring == "softmax_then_topk":
                weights, ids = probs.topk(self.top_k, dim=-1)
                if self.renormalize:
                    weights = weights / weights.sum(dim=-1, keepdim=True)
            else:
                top_logits, ids = logits.topk(self.top_k, dim=-1)
                weights = top_logits.softmax(dim=-1)
            self.tokens_per_expert = count_tokens_per_expert(ids, self.num_experts)
            self.balance_loss = load_balance_loss(probs, self.tokens_per_expert, self.top_k)
            self.z_loss = router_z_loss(logits)
            self.aux_loss = self.balance_coef * self.balance_loss + self.z_coef * self.z_loss
        return weights, ids

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"scoring={self.scoring}, renormalize={self.renormalize}"
        )
