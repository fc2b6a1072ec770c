"""An exported model directory, read back as something that answers questions about images.

``mm15 export`` (:mod:`mm15_components.export`) writes the directory:

- ``model.safetensors``: the ``MM15Model`` weights (:mod:`mm15_components.weights`);
- ``mm15.json``: how to rebuild and feed the model: the model's resolved configuration
  (``class_path``/``init_args``, random-init: the weights come from the file above), the image
  settings (input size, tokens per image, mean/std, splitter, tile indicators), the box codec,
  the chat template and the generation settings;
- ``tokenizer/``: the tokenizer files (its own chat template among them).

:func:`load_pretrained` rebuilds the model from these and returns a :class:`Pretrained`, which
asks questions the way training data does (:func:`~mm15_components.data.prompt.question_sample`
encoded by :class:`~mm15_components.data.collate.SampleEncoder`) and answers greedily as
validation does (:func:`greedy_answers`). No trainer is involved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.prompt import question_sample
from mm15_components.data.schema import EncodedSample
from mm15_components.grounding.codec import BoxCodec
from mm15_components.grounding.decoding import BoxLogitsProcessor
from mm15_components.language.chat import (
    ChatTemplate,
    ConversationTemplate,
    TokenizerChatTemplate,
)
from mm15_components.language.tokenizer import IMAGE_TOKEN, load_tokenizer
from mm15_components.model import MM15Model
from mm15_components.vision.anyres import AnyResSplitter
from mm15_components.vision.pixels import to_rgb
from mm15_components.weights import EXPORT_WEIGHTS, load_weights_from

EXPORT_CONFIG = "mm15.json"
"""File name of the settings in an exported model directory."""
EXPORT_TOKENIZER = "tokenizer"
"""Folder of the tokenizer files in an exported model directory."""
FORMAT_VERSION = 1
CONFIG_KEYS = ("format_version", "model", "image", "codec", "chat_template", "generation")
IMAGE_KEYS = ("image_size", "image_tokens", "mean", "std", "splitter", "tile_indicators")


def greedy_answers(
    model: MM15Model,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    pixel_values: torch.Tensor,
    max_new_tokens: int,
    box_processor: BoxLogitsProcessor | None = None,
    synced_gpus: bool = False,
) -> list[str]:
    """Greedy answers to left-padded prompts, as text: the one way evaluation, ``mm15
    predict`` and exported models generate. ``box_processor`` constrains boxes to the codec's
    grammar; ``synced_gpus`` keeps finished ranks stepping while sharded weights gather."""
    new_tokens = model.generate(
        prompt_ids,
        prompt_mask,
        pixel_values,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        logits_processor=LogitsProcessorList([box_processor] if box_processor else []),
        synced_gpus=synced_gpus,
    )
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class Pretrained:
    """An exported model ready to answer: ``chat`` for one question, ``chat_batch`` for
    several, ``loglikelihood`` to score given answers (multiple choice).

    Args:
        model: the model, weights loaded.
        tokenizer: its tokenizer.
        encoder: turns a question and its images into the model's inputs, as in training.
        codec: how boxes are written in answers (``codec.decode`` reads them back).
        max_new_tokens: default answer budget.
        constrained_decoding: keep boxes in the codec's grammar while generating.
    """

    def __init__(
        self,
        model: MM15Model,
        tokenizer: PreTrainedTokenizerBase,
        encoder: SampleEncoder,
        codec: BoxCodec,
        max_new_tokens: int = 24,
        constrained_decoding: bool = False,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.codec = codec
        self.max_new_tokens = max_new_tokens
        self.box_processor = BoxLogitsProcessor(tokenizer, codec) if constrained_decoding else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Pretrained:
        """Move the model (and cast its weights to ``dtype``); returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    def encode(self, images: Sequence[Image.Image], question: str) -> EncodedSample:
        """The encoded sample of ``question`` about ``images`` (the question, then the
        images, in the training chat template); its ``input_ids[:prompt_length]`` is the
        prompt."""
        if IMAGE_TOKEN in question:
            raise ValueError(
                f"the question must not contain {IMAGE_TOKEN}: the images are placed after "
                f"it, one {IMAGE_TOKEN} each; got {question!r}"
            )
        return self.encoder(question_sample(question, [to_rgb(image) for image in images]))

    def chat(
        self, images: Sequence[Image.Image], question: str, max_new_tokens: int | None = None
    ) -> str:
        """The greedy answer to ``question`` about ``images`` (any number, zero included)."""
        return self.chat_batch([(images, question)], max_new_tokens)[0]

    @torch.no_grad()
    def chat_batch(
        self,
        requests: Sequence[tuple[Sequence[Image.Image], str]],
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Greedy answers to ``(images, question)`` pairs, generated as one batch."""
        if not requests:
            return []
        items = [self.encode(images, question) for images, question in requests]
        batch = collate(items, self.tokenizer.pad_token_id)
        device = self.device
        return greedy_answers(
            self.model,
            self.tokenizer,
            batch["prompt_ids"].to(device),
            batch["prompt_mask"].to(device),
            batch["pixel_values"].to(device),
            max_new_tokens or self.max_new_tokens,
            self.box_processor,
        )

    @torch.no_grad()
    def loglikelihood(
        self, images: Sequence[Image.Image], question: str, continuation: str
    ) -> tuple[float, bool]:
        """``(log P(continuation | prompt), whether greedy decoding would write it)``: the
        prompt is the one ``chat`` asks, the continuation the text the model would write next
        (e.g. a multiple-choice option)."""
        item = self.encode(images, question)
        prompt = item["input_ids"][: item["prompt_length"]]
        answer = self.tokenizer(continuation, add_special_tokens=False).input_ids
        if not answer:
            raise ValueError(f"the continuation {continuation!r} has no tokens")
        input_ids = torch.cat([prompt, torch.tensor(answer)])[None].to(self.device)
        pixel_values = item["pixel_values"].to(self.device)
        logits = self.model(input_ids, torch.ones_like(input_ids), pixel_values)
        predicted = logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
        target = torch.tensor(answer, device=predicted.device)
        logprob = predicted.gather(-1, target[:, None]).sum().item()
        greedy = bool((predicted.argmax(-1) == target).all())
        return logprob, greedy


def load_pretrained(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Pretrained:
    """The model exported to the directory ``path`` (``mm15 export``), ready to ``chat``.

    Raises ``FileNotFoundError`` naming the missing file, and ``ValueError`` naming the file
    and key of a setting that is missing or does not fit, or the weights that do not fit
    the configured model.
    """
    from jsonargparse import ArgumentParser

    directory = Path(path)
    config = read_export_config(directory)
    tokenizer_dir = directory / EXPORT_TOKENIZER
    if not tokenizer_dir.is_dir():
        raise FileNotFoundError(f"{tokenizer_dir}: the exported tokenizer is missing")
    if not (directory / EXPORT_WEIGHTS).is_file():
        raise FileNotFoundError(f"{directory / EXPORT_WEIGHTS}: the exported weights are missing")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=MM15Model)
    parser.add_argument("--codec", type=BoxCodec)
    parser.add_argument("--splitter", type=AnyResSplitter | None)
    image = config["image"]
    try:
        built = parser.instantiate_classes(
            parser.parse_object(
                {"model": config["model"], "codec": config["codec"], "splitter": image["splitter"]}
            )
        )
    except Exception as error:  # jsonargparse reports what it could not build
        raise ValueError(f"{directory / EXPORT_CONFIG}: cannot build the model: {error}") from error
    codec: BoxCodec = built.codec
    tokenizer = load_tokenizer(str(tokenizer_dir), codec.coordinate_tokens())
    model: MM15Model = built.model
    model.set_vocabulary(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    load_weights_from(model, directory)
    encoder = SampleEncoder(
        tokenizer,
        image["image_size"],
        image["image_tokens"],
        tuple(image["mean"]),
        tuple(image["std"]),
        template=chat_template_from(config["chat_template"], directory / EXPORT_CONFIG),
        splitter=built.splitter,
        tile_indicators=image["tile_indicators"],
    )
    generation = config["generation"]
    pretrained = Pretrained(
        model,
        tokenizer,
        encoder,
        codec,
        max_new_tokens=generation["max_new_tokens"],
        constrained_decoding=generation["constrained_decoding"],
    )
    return pretrained.to(device, dtype)


def read_export_config(directory: Path) -> dict[str, Any]:
    """``mm15.json`` of an exported directory, its sections checked."""
    file = directory / EXPORT_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing; not an exported model directory")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON: {error}") from error
    for key in CONFIG_KEYS:
        if key not in config:
            raise ValueError(f"{file}: key {key!r} is missing")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{file}: format_version {config['format_version']!r}; this version reads "
            f"{FORMAT_VERSION}"
        )
    for key in IMAGE_KEYS:
        if key not in config["image"]:
            raise ValueError(f"{file}: key 'image.{key}' is missing")
    for key in ("max_new_tokens", "constrained_decoding"):
        if key not in config["generation"]:
            raise ValueError(f"{file}: key 'generation.{key}' is missing")
    return config


def chat_template_config(template: ConversationTemplate) -> dict[str, Any]:
    """How ``mm15.json`` records a data module's chat template: the tokenizer's own, or the
    plain one with its strings."""
    if isinstance(template, ChatTemplate):
        return {
            "kind": "plain",
            "user_prefix": template.user_prefix,
            "assistant_prefix": template.assistant_prefix,
            "separator": template.separator,
        }
    return {"kind": "tokenizer"}


def chat_template_from(config: dict[str, Any], file: Path) -> ConversationTemplate:
    """The template ``chat_template_config`` recorded (``file`` is named in errors)."""
    kind = config.get("kind")
    if kind == "tokenizer":
        return TokenizerChatTemplate()
    if kind == "plain":
        return ChatTemplate(**{k: v for k, v in config.items() if k != "kind"})
    raise ValueError(f"{file}: chat_template.kind must be 'tokenizer' or 'plain', got {kind!r}")
