"""Any transformers causal LM, loaded by name, local path or config."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from mm15_components.moe.convert import convert_to_moe


class CausalLM(nn.Module):
    """A decoder-only LLM from transformers, fed with input embeddings.

    Args:
        pretrained: hub name or local directory for ``AutoModelForCausalLM.from_pretrained``.
        config: random weights from a config: a dict with ``model_type`` (e.g. a tiny Llama),
            or the hub name / directory of a config. Give exactly one of ``pretrained`` and
            ``config``.
        dtype: parameter dtype, e.g. ``"bfloat16"``; None keeps the checkpoint's or fp32.
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ...).
        grad_checkpointing: recompute decoder-layer activations in backward.
        moe: turn the model into a Mixture-of-Experts one: keyword arguments of
            ``convert_to_moe`` (e.g. ``{every: 2, num_experts: 64, top_k: 2}``, MM1.5-MoE).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        config: dict[str, Any] | str | None = None,
        dtype: str | None = None,
        attn_implementation: str = "sdpa",
        grad_checkpointing: bool = False,
        moe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (config is None):
            raise ValueError("CausalLM needs exactly one of `pretrained` and `config`")
        torch_dtype = getattr(torch, dtype) if dtype else None
        self.pretrained = pretrained is not None
        if pretrained is not None:
            try:
                self.model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                    pretrained, dtype=torch_dtype, attn_implementation=attn_implementation
                )
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot load language model {pretrained!r}: {error}") from error
        else:
            hf_config = self._load_config(config)
            hf_config._attn_implementation = attn_implementation
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
        if moe is not None:
            convert_to_moe(self.model, **moe)
        if grad_checkpointing:
            self.model.gradient_checkpointing_enable({"use_reentrant": False})

    @staticmethod
    def _load_config(config: dict[str, Any] | str) -> PretrainedConfig:
        try:
            if isinstance(config, str):
                return AutoConfig.from_pretrained(config)
            config = dict(config)
            return AutoConfig.for_model(config.pop("model_type", None), **config)
        except (KeyError, OSError, ValueError) as error:
            raise ValueError(f"bad language model config {config!r}: {error}") from error

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def layers(self) -> list[nn.Module]:
        """The decoder layers (the units FSDP shards), found by transformers' no-split classes."""
        names = set(self.model._no_split_modules or [])
        return [m for m in self.model.modules() if type(m).__name__ in names]

    def resize_vocab(self, vocab_size: int) -> None:
        """Fit the embeddings (and tied head) to a tokenizer with added tokens. Pretrained
        vocabularies only grow (checkpoints often pad theirs beyond the tokenizer's); a model
        built from a config takes the tokenizer's size exactly."""
        current = self.model.get_input_embeddings().num_embeddings
        if current < vocab_size or (not self.pretrained and current != vocab_size):
            self.model.resize_token_embeddings(vocab_size, mean_resizing=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, T, hidden]`` embeddings -> ``[B, T, vocab]`` next-token logits. Position ids
        that restart within a row (and no attention mask) mark packed samples, which
        transformers keeps from attending to each other; no KV cache is built."""
        return self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).logits

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any):
        """transformers ``generate`` from embeddings; returns only the new token ids."""
        return self.model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
        )
