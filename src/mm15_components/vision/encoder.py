"""open_clip ViT as a patch-feature encoder for image tiles."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

# Small configs shipped with the package (the quickstart's tiny ViT) join open_clip's registry.
open_clip.add_model_config(Path(__file__).resolve().parent.parent / "model_configs")

CLIP_MEAN = open_clip.OPENAI_DATASET_MEAN
CLIP_STD = open_clip.OPENAI_DATASET_STD


class OpenCLIPVisionEncoder(nn.Module):
    """The image tower of any open_clip ViT, returning the patch tokens of one layer.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``), e.g.
            ``ViT-H-14-378-quickgelu`` (MM1.5's DFN encoder) or ``mm15-tiny-vit``.
        pretrained: an open_clip pretrained tag (``dfn5b``), a local checkpoint path, or
            None / False for random weights (no download).
        image_size: input size in pixels if it differs from the model's native size; the
            position embedding is interpolated (bicubic) to the new patch grid.
        feature_layer: which transformer block's output to return (negative counts from the
            end). Later blocks are dropped, so every parameter receives a gradient.
    """

    POSITION_EMBEDDING = "visual.positional_embedding"
    """The position embedding's key in this module's state dict (``[1 + patches, width]``,
    class token first), for loaders that resample it to another grid."""

    def __init__(
        self,
        model_name: str = "ViT-H-14-378-quickgelu",
        pretrained: Literal[False] | str | None = None,
        image_size: int | None = None,
        feature_layer: int = -1,
    ) -> None:
        super().__init__()
        if open_clip.get_model_config(model_name) is None:
            raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
        # Build on the current default device, so `with torch.device("meta"):` works.
        device = torch.get_default_device()
        clip = open_clip.create_model(model_name, pretrained=pretrained or None, device=device)
        visual = clip.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer):
            raise ValueError(f"{model_name!r} has no ViT image tower ({type(visual).__name__})")
        num_blocks = len(visual.transformer.resblocks)
        layer = feature_layer % num_blocks if -num_blocks <= feature_layer < num_blocks else None
        if layer is None:
            raise ValueError(f"feature_layer={feature_layer} out of range for {num_blocks} blocks")
        visual.prune_intermediate_layers([layer], prune_norm=True, prune_head=True)
        self.visual = visual
        self.pretrained = bool(pretrained)
        self.model_name = model_name
        if image_size is not None and image_size != self.image_size:
            self.resize_position_embedding(image_size)

    @property
    def width(self) -> int:
        """Channels of each patch feature."""
        return self.visual.transformer.width

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size[0]

    @property
    def image_size(self) -> int:
        return self.visual.image_size[0]

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and row of one input image."""
        return tuple(self.visual.grid_size)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (the units FSDP shards)."""
        return self.visual.transformer.resblocks

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.visual.image_mean or CLIP_MEAN)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.visual.image_std or CLIP_STD)

    def resize_position_embedding(self, image_size: int) -> None:
        """Interpolate the position embedding to ``image_size`` (a multiple of the patch size)."""
        if image_size <= 0 or image_size % self.patch_size:
            lower = max(image_size // self.patch_size, 1) * self.patch_size
            raise ValueError(
                f"vision image_size={image_size} is not a multiple of the patch size "
                f"{self.patch_size} of {self.model_name}: use {lower} or "
                f"{lower + self.patch_size} (the data's tile size follows it)"
            )
        new = image_size // self.patch_size
        pos = self.visual.positional_embedding
        self.visual.positional_embedding = nn.Parameter(interpolate_position_embedding(pos, new))
        self.visual.grid_size = (new, new)
        self.visual.image_size = (image_size, image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` normalised images -> ``[N, patches, width]`` patch features."""
        if images.ndim != 4 or tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images [N, 3, {self.image_size}, {self.image_size}], "
                f"got {tuple(images.shape)}"
            )
        out = self.visual.forward_intermediates(
            images, indices=1, intermediates_only=True, output_fmt="NLC"
        )
        return out["image_intermediates"][0]


def interpolate_position_embedding(pos: torch.Tensor, side: int) -> torch.Tensor:
    """A ViT position embedding ``[1 + g*g, width]`` (class token first) resampled bicubically
    to a ``side x side`` patch grid: ``[1 + side*side, width]``, in ``pos``'s dtype."""
    cls_pos, grid_pos = pos[:1], pos[1:]
    old = math.isqrt(grid_pos.shape[0])
    if old * old != grid_pos.shape[0]:
        raise ValueError(f"position embedding of {grid_pos.shape[0]} patches is not a square grid")
    grid = grid_pos.detach().reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    grid_pos = grid.permute(0, 2, 3, 1).reshape(side * side, -1).to(pos.dtype)
    return torch.cat([cls_pos.detach(), grid_pos])
