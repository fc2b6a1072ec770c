"""C-Abstractor (Honeybee, arXiv 2312.06742): the convolutional connector of MM1 and MM1.5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.regnet import RegStage
from torch import nn

from mm15_components.connectors.pooling import grid_to_tokens, query_side, tokens_to_grid


def regnet_stage(depth: int, in_dim: int, out_dim: int) -> RegStage:
    """``depth`` RegNet bottlenecks (depthwise 3x3, squeeze-excite) with LayerNorm2d and SiLU."""
    return RegStage(
        depth, in_dim, out_dim, stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d
    )


class CAbstractor(nn.Module):
    """Turns a patch grid of any shape into ``num_queries`` tokens of the LLM width.

    Pipeline: optional learned positional embedding on the patch tokens -> RegNet stage
    (``in_dim -> hidden_dim``) -> adaptive average pooling to a ``sqrt(num_queries)`` square
    -> second RegNet stage -> MLP readout (``mlp_depth`` linears, SiLU between) to ``out_dim``.
    The convolutions mix each token with its neighbours before and after pooling, so the
    fixed token budget keeps local detail and the spatial order the LLM relies on.

    The positional embedding is learned on a ``pos_grid`` patch grid (27x27 is CLIP ViT-H/14
    at 378 px) and resampled bicubically to other grids, square or not, such as 48x48 for
    672 px tiles. Parameter names (``pos_emb``, ``net.0``, ``net.2``, ``readout``) follow
    Honeybee's projector. All tiles of a batch go through in one call; tiles never interact.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_queries: int = 144,
        depth: int = 3,
        hidden_dim: int = 1024,
        mlp_depth: int = 2,
        pos_embed: bool = True,
        pos_grid: int | tuple[int, int] = 27,
    ):
        super().__init__()
        side = query_side(num_queries)
        if depth < 1:
            raise ValueError(f"depth (RegNet blocks per stage) must be >= 1, got {depth}")
        if mlp_depth < 1:
            raise ValueError(f"mlp_depth (readout linear layers) must be >= 1, got {mlp_depth}")
        rows, cols = (pos_grid, pos_grid) if isinstance(pos_grid, int) else tuple(pos_grid)
        if rows < 1 or cols < 1:
            raise ValueError(f"pos_grid must be positive, got {pos_grid}")
        self.in_dim = in_dim
        self.num_queries = num_queries
        self.pos_grid = (rows, cols)
        self.pos_emb: nn.Parameter | None = None
        if pos_embed:
            self.pos_emb = nn.Parameter(torch.empty(1, rows * cols, in_dim))
            nn.init.trunc_normal_(self.pos_emb, std=0.02)
        self.net = nn.Sequential(
            regnet_stage(depth, in_dim, hidden_dim),
            nn.AdaptiveAvgPool2d(side),
            regnet_stage(depth, hidden_dim, hidden_dim),
        )
        readout: list[nn.Module] = [nn.Linear(hidden_dim, out_dim)]
        for _ in range(mlp_depth - 1):
            readout += [nn.SiLU(), nn.Linear(out_dim, out_dim)]
        self.readout = nn.Sequential(*readout)

    def num_tokens(self, grid_size: tuple[int, int]) -> int:
        """Output tokens per image: ``num_queries`` whatever the patch grid."""
        return self.num_queries

    def positional_embedding(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """``[1, rows*cols, in_dim]``: the learned embedding resampled (bicubic, in fp32) to
        ``grid_size``; on the native ``pos_grid`` it comes back unchanged."""
        if self.pos_emb is None:
            raise ValueError("this CAbstractor was built with pos_embed=False")
        native = tokens_to_grid(self.pos_emb.float(), self.in_dim, self.pos_grid)
        resized = F.interpolate(native, size=tuple(grid_size), mode="bicubic", align_corners=False)
        return grid_to_tokens(resized).to(self.pos_emb.dtype)

    def forward(
        self, features: torch.Tensor, grid_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``[B, patches, in_dim] -> [B, num_queries, out_dim]``; ``grid_size`` is the
        (rows, cols) patch grid, needed only when it is not square."""
        grid = tokens_to_grid(features, self.in_dim, grid_size)
        if self.pos_emb is not None:
            pos = self.positional_embedding(grid.shape[-2:]).to(grid.dtype)
            grid = grid + tokens_to_grid(pos, self.in_dim, grid.shape[-2:])
        return self.readout(grid_to_tokens(self.net(grid)))
