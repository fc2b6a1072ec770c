"""MM15Model: vision encoder -> connector -> causal LM, joined at image placeholder tokens."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mm15_components.connectors.mlp import MLPProjector
from mm15_components.language.decoder import CausalLM
from mm15_components.vision.encoder import OpenCLIPVisionEncoder


class MM15Model(nn.Module):
    """The multimodal LLM as a plain ``nn.Module``.

    Images are encoded tile by tile (all tiles of a batch in one pass), projected to the LLM
    width by the connector, and written into the embedded sequence at the image placeholder
    tokens, in order: the k-th image row of ``pixel_values`` fills the k-th run of
    placeholders in the batch (row-major over samples). Samples may have any number of images,
    zero included.

    Args:
        vision: the image encoder.
        language: the causal LM.
        connector: builds the connector from ``(vision width, LLM width)``; in YAML a
            ``class_path`` whose other ``init_args`` are given there.
        cpu_bf16_attention: the attention kernel on CPU in bf16: ``math`` (see
            :func:`attention_kernels`) or ``torch`` (torch's choice, the fused kernel).
    """

    def __init__(
        self,
        vision: OpenCLIPVisionEncoder,
        language: CausalLM,
        connector: Callable[[int, int], nn.Module] = MLPProjector,
        cpu_bf16_attention: Literal["math", "torch"] = "math",
    ) -> None:
        super().__init__()
        self.cpu_bf16_attention = cpu_bf16_attention
        self.vision = vision
        self.connector = connector(vision.width, language.hidden_size)
        self.language = language
        self.image_token_id: int | None = None

    def set_vocabulary(self, vocab_size: int, image_token_id: int) -> None:
        """Size the embeddings to the tokenizer and learn which id marks image features."""
        self.language.resize_vocab(vocab_size)
        self.image_token_id = image_token_id

    @property
    def tokens_per_image(self) -> int:
        """LLM tokens one image (or tile) becomes."""
        return self.connector.num_tokens(self.vision.grid_size)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` -> ``[N, tokens_per_image, LLM width]``."""
        dtype = next(self.vision.parameters()).dtype
        features = self.vision(pixel_values.to(dtype))
        return self.connector(features, self.vision.grid_size)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with image features written at the placeholder positions."""
        if self.image_token_id is None:
            raise RuntimeError("call set_vocabulary() before using the model")
        embeds = self.language.embed(input_ids)
        slots = input_ids == self.image_token_id
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        if num_images == 0:
            if slots.any():
                raise ValueError("the batch has image placeholder tokens but no images")
            return embeds
        features = self.encode_images(pixel_values).flatten(0, 1)
        num_slots = int(slots.sum())
        if num_slots != features.shape[0]:
            raise ValueError(
                f"the batch has {num_slots} image placeholder tokens (per sample: "
                f"{slots.sum(1).tolist()}) but its {num_images} image(s) give "
                f"{self.tokens_per_image} tokens each = {features.shape[0]}; the data must "
                f"expand each <image> to {self.tokens_per_image} tokens"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab]``; packed rows pass ``position_ids`` that restart
        at each sample and no ``attention_mask`` (see ``data.packing``)."""
        dtype = next(self.language.parameters()).dtype
        with attention_kernels(input_ids.device, dtype, self.cpu_bf16_attention):
            embeds = self.embed(input_ids, pixel_values)
            return self.language(embeds, attention_mask, position_ids)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Continue left-padded prompts; returns only the generated token ids."""
        embeds = self.embed(input_ids, pixel_values)
        return self.language.generate(embeds, attention_mask, **kwargs)


def attention_kernels(
    device: torch.device, dtype: torch.dtype, cpu_bf16: Literal["math", "torch"] = "math"
) -> contextlib.AbstractContextManager:
    """The scaled-dot-product attention kernels to train with.

    On CPU in bf16 (``bf16-mixed`` autocast or bf16 weights) torch's fused flash kernel is the
    slow one: its backward takes 2-3x the fp32 kernel's time on short sequences, and the plain
    matmul-softmax ("math") path is faster (benchmarks/precision.py). The math path keeps the
    ``[B, heads, T, T]`` attention weights for backward, as eager attention does. Elsewhere,
    or with ``cpu_bf16="torch"``, torch chooses.
    """
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    if cpu_bf16 == "math" and device.type == "cpu" and dtype == torch.bfloat16:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()
