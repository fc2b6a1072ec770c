"""Patch-grid helpers for the pooling connectors, and an average-pooling baseline connector."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mm15_components.connectors.mlp import patch_grid


def query_side(num_queries: int) -> int:
    """Side of the square query grid; pooled connectors emit ``side * side`` tokens."""
    side = math.isqrt(num_queries) if num_queries > 0 else 0
    if side == 0 or side * side != num_queries:
        raise ValueError(
            f"num_queries must be a positive perfect square (64, 144, 256, ...), got {num_queries}"
        )
    return side


def tokens_to_grid(
    features: torch.Tensor, channels: int, grid_size: tuple[int, int] | None
) -> torch.Tensor:
    """``[B, rows*cols, C] -> [B, C, rows, cols]`` as a view (channels-last strides, no copy)."""
    if features.ndim != 3 or features.shape[-1] != channels:
        raise ValueError(
            f"expected patch features [batch, patches, {channels}], got {tuple(features.shape)}"
        )
    rows, cols = patch_grid(features.shape[1], grid_size)
    return features.unflatten(1, (rows, cols)).permute(0, 3, 1, 2)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """``[B, C, rows, cols] -> [B, rows*cols, C]`` in row-major order."""
    return grid.flatten(2).transpose(1, 2)


class AvgPoolProjector(nn.Module):
    """Adaptive average pooling to ``num_queries`` tokens, then a two-layer GELU MLP.

    The ablation baseline for the C-Abstractor: the same token budget and spatial order, but
    no convolutions, so each output token sees only its own pooling window.
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_queries: int = 144, hidden_dim: int | None = None
    ):
        super().__init__()
        self.in_dim = in_dim
        self.num_queries = num_queries
        self.side = query_side(num_queries)
        hidden_dim = hidden_dim or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def num_tokens(self, grid_size: tuple[int, int]) -> int:
        """Output tokens per image: ``num_queries`` whatever the patch grid."""
        return self.num_queries

    def forward(
        self, features: torch.Tensor, grid_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``[B, patches, in_dim] -> [B, num_queries, out_dim]``; pooling first keeps the MLP
        on the few pooled tokens."""
        grid = tokens_to_grid(features, self.in_dim, grid_size)
        pooled = F.adaptive_avg_pool2d(grid, self.side)
        return self.mlp(grid_to_tokens(pooled))
