"""Baseline connectors for ablations: an MLP projector with optional patch pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patch_grid(num_patches: int, grid_size: tuple[int, int] | None) -> tuple[int, int]:
    """The (rows, cols) patch grid of ``num_patches`` tokens; square unless ``grid_size`` says."""
    if grid_size is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"{num_patches} patch tokens do not form a square grid; pass grid_size=(rows, cols)"
            )
        return side, side
    if grid_size[0] * grid_size[1] != num_patches:
        raise ValueError(f"grid_size {grid_size} does not hold {num_patches} patch tokens")
    return grid_size


class MLPProjector(nn.Module):
    """LLaVA-1.5's two-layer GELU MLP, after an optional ``pool`` x ``pool`` average pooling.

    Pooling cuts the image tokens per image by ``pool**2`` (a cheaper sequence) and keeps
    their spatial order; for grounding a tiny model learns far sooner from every patch
    (``pool=1``, see docs/quickstart.md).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, pool: int = 1):
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = pool
        hidden_dim = hidden_dim or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def num_tokens(self, grid_size: tuple[int, int]) -> int:
        """Output tokens for an image whose patch grid is ``grid_size``."""
        return (grid_size[0] // self.pool) * (grid_size[1] // self.pool)

    def forward(
        self, features: torch.Tensor, grid_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``[B, patches, in_dim] -> [B, tokens, out_dim]``."""
        if self.pool > 1:
            rows, cols = patch_grid(features.shape[1], grid_size)
            grid = features.transpose(1, 2).reshape(features.shape[0], -1, rows, cols)
            features = F.avg_pool2d(grid, self.pool).flatten(2).transpose(1, 2)
        return self.mlp(features)
