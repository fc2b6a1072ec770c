"""Any transformers causal LM, loaded by name, local path or config."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from mm15_components.moe.convert import convert_to_moe


class CausalLM(nn.Module):
    """A decoder-only LLM from transformers, fed with input embeddings.

    Args:
        pretrained: hub name or local directory for ``AutoModelForCausalLM.from_pretrained``;
            None or False builds random weights from ``config`` (no download).
        config: the architecture: a dict with ``model_type`` (e.g. a tiny Llama, or
            Qwen2.5-1.5B's numbers), or the hub name / directory of a config. Without
            ``pretrained`` the model is built from it with random weights; beside
            ``pretrained`` (a dict then) it states what the checkpoint must be: every key it
            gives must equal the checkpoint's.
        dtype: parameter dtype; float32 keeps the master weights the optimizer updates (bf16
            compute comes from the trainer's precision); None keeps the checkpoint's.
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ...).
        num_layers: keep only the first decoder layers (a shallow model for smoke runs);
            None keeps them all.
        moe: turn the model into a Mixture-of-Experts one: keyword arguments of
            ``convert_to_moe`` (e.g. ``{every: 2, num_experts: 64, top_k: 2}``, MM1.5-MoE).
    """

    def __init__(
        self,
        pretrained: Literal[False] | str | None = None,
        config: dict[str, Any] | str | None = None,
        dtype: str | None = "float32",
        attn_implementation: str = "sdpa",
        num_layers: int | None = None,
        moe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        pretrained = pretrained or None
        if pretrained is None and config is None:
            raise ValueError("CausalLM needs `pretrained` weights or a `config` to build from")
        torch_dtype = getattr(torch, dtype) if dtype else None
        self.pretrained = pretrained is not None
        if pretrained is not None:
            try:
                self.model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                    pretrained, dtype=torch_dtype, attn_implementation=attn_implementation
                )
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot load language model {pretrained!r}: {error}") from error
            if config is not None:
                check_config(self.model.config, config, pretrained)
            if num_layers is not None:
                keep_layers(self.model, num_layers)
        else:
            hf_config = self._load_config(config)
            hf_config._attn_implementation = attn_implementation
            if num_layers is not None:
                keep_layers(hf_config, num_layers)  # only those layers are built
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
        if moe is not None:
            convert_to_moe(self.model, **moe)

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
    def config(self) -> PretrainedConfig:
        """The transformers configuration the model was built with (its architecture)."""
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table (tied to the output head when the config ties them)."""
        return self.model.get_input_embeddings()

    @property
    def layers(self) -> list[nn.Module]:
        """The decoder layers (the units FSDP shards), found by transformers' no-split classes."""
        names = set(self.model._no_split_modules or [])
        return [m for m in self.model.modules() if type(m).__name__ in names]

    def resize_vocab(self, vocab_size: int) -> None:
        """Fit the embeddings (and tied head) to a tokenizer with added tokens. Pretrained
        vocabularies only grow (checkpoints often pad theirs beyond the tokenizer's); a model
        built from a config takes the tokenizer's size exactly."""
        current = self.input_embeddings.num_embeddings
        if current < vocab_size or (not self.pretrained and current != vocab_size):
            self.model.resize_token_embeddings(vocab_size, mean_resizing=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.input_embeddings(input_ids)

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


def check_config(loaded: PretrainedConfig, stated: dict[str, Any] | str, name: str) -> None:
    """Raise, naming the keys, where a checkpoint's config differs from the stated one."""
    if not isinstance(stated, dict):
        raise ValueError(f"beside pretrained={name!r}, config must be a dict of the keys to check")
    theirs = loaded.to_dict()
    differ = {
        key: (value, theirs.get(key)) for key, value in stated.items() if theirs.get(key) != value
    }
    if differ:
        shown = ", ".join(f"{k}: stated {a!r}, checkpoint {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"language model {name!r} is not the stated architecture: {shown}")


def keep_layers(model: PreTrainedModel | PretrainedConfig, num_layers: int) -> None:
    """Keep only the first ``num_layers`` decoder layers of a model or of the config that
    will build it, in place."""
    config = model if isinstance(model, PretrainedConfig) else model.config
    if not 1 <= num_layers <= config.num_hidden_layers:
        raise ValueError(
            f"num_layers={num_layers} out of range for {config.num_hidden_layers} decoder layers"
        )
    if isinstance(model, PreTrainedModel):
        decoder = model.get_decoder()
        decoder.layers = decoder.layers[:num_layers]
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:num_layers]
