"""An MLP connector that normalises the vision features before projecting them."""

from __future__ import annotations

import torch
from torch import nn

from mm15_components.connectors import MLPProjector


class NormedMLPProjector(MLPProjector):
    """:class:`~mm15_components.connectors.MLPProjector` after a LayerNorm over the vision
    features, so the LLM sees image tokens of a steady scale whatever the encoder's.

    ``MM15Model`` builds its connector as ``connector(vision_width, llm_width)``: a subclass keeps
    ``in_dim`` and ``out_dim`` first and adds its own arguments after them, each typed, so the
    recipe can set them.

    Args:
        in_dim / out_dim / hidden_dim / pool: as in ``MLPProjector``.
        norm_eps: the LayerNorm's epsilon.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        pool: int = 1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(in_dim, out_dim, hidden_dim, pool)
        self.norm = nn.LayerNorm(in_dim, eps=norm_eps)

    def forward(
        self, features: torch.Tensor, grid_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        return super().forward(self.norm(features), grid_size)
