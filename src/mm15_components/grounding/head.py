"""A distance-aware loss on coordinate tokens: near misses cost less than far ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CoordinateGroundingHead(nn.Module):
    """Scores the coordinate tokens at every answer position whose label is a coordinate, and
    adds a cross-entropy against soft labels: a Gaussian over neighbouring bins.

    Plain next-token cross-entropy treats bin 412 as just as wrong as bin 7 when the answer is
    413. Spreading the target over neighbouring bins gives the model a gradient towards the
    right region from its first steps, which is what a small model trained from scratch
    lacks. The scores are the LM's logits restricted to the coordinate tokens, so with a tied
    LM head they come from the coordinate-token embeddings themselves.

    Args:
        sigma: standard deviation of the soft label, in bins.
        weight: factor on this loss beside the next-token loss.
    """

    def __init__(self, sigma: float = 8.0, weight: float = 1.0) -> None:
        super().__init__()
        if sigma <= 0 or weight < 0:
            raise ValueError(
                f"CoordinateGroundingHead: need sigma > 0 and weight >= 0, got {sigma}, {weight}"
            )
        self.sigma = sigma
        self.weight = weight
        self.register_buffer("coordinate_ids", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("bin_lookup", torch.empty(0, dtype=torch.long), persistent=False)

    def bind(self, coordinate_ids: list[int]) -> None:
        """The token id of each bin value ``0..bins-1`` (see ``coordinate_token_ids``)."""
        device = self.coordinate_ids.device
        self.coordinate_ids = torch.tensor(coordinate_ids, device=device)
        # token id -> bin value (-1 for other tokens), built once for every forward
        self.bin_lookup = torch.full((max(coordinate_ids) + 1,), -1, device=device)
        self.bin_lookup[self.coordinate_ids] = torch.arange(len(coordinate_ids), device=device)

    def bin_of_token(self, labels: torch.Tensor) -> torch.Tensor:
        """Bin value of each label that is a coordinate token, -1 elsewhere."""
        size = len(self.bin_lookup)
        inside = (labels >= 0) & (labels < size)
        return torch.where(inside, self.bin_lookup[labels.clamp(0, size - 1)], -1)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed soft-label cross-entropy (times ``weight``) over coordinate positions.

        ``logits[..., V]`` predict ``labels[...]`` (already shifted); positions whose label is
        not a coordinate token do not count.
        """
        if len(self.coordinate_ids) == 0:
            raise RuntimeError("CoordinateGroundingHead.bind() was not called")
        bins = self.bin_of_token(labels)
        rows = bins >= 0
        scores = logits[rows][:, self.coordinate_ids].float()
        values = torch.arange(len(self.coordinate_ids), device=logits.device, dtype=torch.float32)
        distance = values[None, :] - bins[rows][:, None].float()
        soft = torch.softmax(-0.5 * (distance / self.sigma) ** 2, dim=-1)
        return self.weight * -(soft * F.log_softmax(scores, dim=-1)).sum()
