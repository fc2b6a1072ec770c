"""Samples to model inputs: image tensors, token ids, answer-only labels, padded batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from mm15_components.data.schema import Box, EncodedSample, Sample, SampleOutline, TrainingBatch
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language.chat import ConversationTemplate, chat_template_for
from mm15_components.language.tokenizer import IMAGE_TOKEN
from mm15_components.metrics.validation import validation_metric
from mm15_components.vision.anyres import (
    AnyResSplitter,
    IndicatorStyle,
    TileLayout,
    tile_indicator_text,
)
from mm15_components.vision.pixels import to_rgb


def image_to_tensor(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """An image (any mode, ``vision.pixels.to_rgb``) resized (antialiased) to ``size`` x ``size``
    and normalised: ``[3, S, S]``."""
    image = to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class SampleEncoder:
    """Turns a ``Sample`` into tensors; runs in DataLoader workers.

    Besides the tensors, an item carries what validation scores a sample by: its ``metric``
    (:func:`scoring_metric`), reference ``answers``, ``baseline_answer``, the ``question``
    asked, and ``error`` (None here; set by data that answers for a sample it could not
    read).

    Args:
        template: how turns become token ids; default: the tokenizer's own chat template when
            it has one, else the plain one (``chat_template_for``).
        splitter: MM1.5's dynamic splitter; each image becomes its tiles (plus overview) and
            ``image_tokens`` counts per tile. None resizes each image to one square.
        tile_indicators: text written before each tile's tokens (MM1.5's position
            indicators): ``index`` ("<image 1, row 1, col 2>"), ``seps`` ("," between
            columns, "<n>" between rows, ":" before the overview) or ``none``.
        baseline_box: a constant box (fractions of the image) attached to grounding samples as
            ``baseline_box``, so evaluation can score the best constant answer beside the model.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        image_tokens: int,
        mean: Sequence[float],
        std: Sequence[float],
        template: ConversationTemplate | None = None,
        splitter: AnyResSplitter | None = None,
        tile_indicators: IndicatorStyle = "none",
        baseline_box: Box | None = None,
    ) -> None:
        if splitter is not None and splitter.tile_size != image_size:
            raise ValueError(
                f"the splitter's tile_size ({splitter.tile_size}) must equal the encoder's "
                f"image_size ({image_size})"
            )
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_tokens = image_tokens
        self.mean, self.std = mean, std
        self.template = template or chat_template_for(tokenizer)
        self.splitter = splitter
        self.tile_indicators = tile_indicators
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.baseline_box = baseline_box
        self._image_lengths: dict[tuple, int] = {}

    def images_to_tiles(
        self, images: list[Image.Image]
    ) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Each image's ``[tiles, 3, S, S]`` pixels and the token ids it becomes."""
        if self.splitter is None:
            pixels = [
                image_to_tensor(im, self.image_size, self.mean, self.std)[None] for im in images
            ]
            return pixels, [[self.image_token_id] * self.image_tokens] * len(images)
        split = self.splitter.split_sample([to_rgb(image) for image in images])
        return [tiles for tiles, _ in split], [
            self.layout_tokens(layout, index) for index, (_, layout) in enumerate(split)
        ]

    def layout_tokens(self, layout: TileLayout, image_index: int) -> list[int]:
        """Indicator text and image tokens of every tile of one image, in emission order."""
        ids: list[int] = []
        for text in tile_indicator_text(layout, image_index, self.tile_indicators):
            if text:
                ids += self.tokenizer(text, add_special_tokens=False).input_ids
            ids += [self.image_token_id] * self.image_tokens
        return ids

    def token_counts(self, outlines: Sequence[SampleOutline]) -> list[int]:
        """``len(self(sample)["input_ids"])`` of each sample, from its outline: the text of all
        of them tokenised in one batch, each image's tokens from its ``TileLayout`` (as
        ``images_to_tiles`` plans it), no pixel read."""
        lengths = self.template.text_lengths(self.tokenizer, [o.turns for o in outlines])
        return [
            length + sum(self.image_length(layout, k) - 1 for k, layout in enumerate(layouts))
            for length, layouts in zip(lengths, map(self.layouts, outlines), strict=True)
        ]

    def layouts(self, outline: SampleOutline) -> list[TileLayout | None]:
        """Each image's layout (None: no splitter, one square)."""
        if self.splitter is None:
            return [None] * len(outline.image_sizes)
        return list(self.splitter.plan_sample(outline.image_sizes))

    def image_length(self, layout: TileLayout | None, image_index: int) -> int:
        """How many ids image ``image_index`` of a sample becomes (``layout_tokens``)."""
        if layout is None:
            return self.image_tokens
        key = (layout.rows, layout.cols, layout.overview, image_index)
        if key not in self._image_lengths:  # a few keys: indicator text depends on nothing else
            self._image_lengths[key] = len(self.layout_tokens(layout, image_index))
        return self._image_lengths[key]

    def fingerprint(self) -> str:
        """A hash of everything a sample's token count depends on, for caching counts: the
        tokenizer (its whole definition and chat template), the template, the tokens per
        image, the splitter's tiling settings and the tile indicators."""
        tokenizer = getattr(self.tokenizer, "backend_tokenizer", None)
        splitter = self.splitter
        parts = [
            tokenizer.to_str() if tokenizer is not None else repr(self.tokenizer.get_vocab()),
            repr(self.tokenizer.chat_template),
            repr(self.template),
            repr((self.image_tokens, self.tile_indicators)),
        ]
        if splitter is not None:
            policy = getattr(splitter.policy, "__qualname__", type(splitter.policy).__qualname__)
            parts.append(
                repr((splitter.tile_size, splitter.min_tiles, splitter.max_tiles))
                + repr((splitter.overview, splitter.max_images_to_split, policy))
            )
        return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]

    def __call__(self, sample: Sample) -> EncodedSample:
        pixels, image_tokens = self.images_to_tiles(sample.images)
        encoded = self.template.encode(self.tokenizer, sample.turns, image_tokens, where=sample.id)
        item: EncodedSample = {
            "id": sample.id,
            "input_ids": torch.tensor(encoded.input_ids),
            "labels": torch.tensor(encoded.labels),
            "prompt_length": encoded.prompt_length,
            "pixel_values": torch.cat(pixels)
            if pixels
            else torch.zeros(0, 3, self.image_size, self.image_size),
            "target_box": torch.full((4,), float("nan")),
            "baseline_box": torch.full((4,), float("nan")),
            "image_size": torch.tensor(sample.images[0].size[::-1] if sample.images else (0, 0)),
            "metric": scoring_metric(sample),
            "answers": list(sample.answers),
            "baseline_answer": sample.baseline_answer,
            "question": last_question(sample),
            "error": None,
        }
        if sample.target_box is not None:
            width, height = sample.images[0].size
            item["target_box"] = torch.tensor(sample.target_box)
            if self.baseline_box is not None:
                scale = torch.tensor([width, height, width, height], dtype=torch.float32)
                item["baseline_box"] = torch.tensor(self.baseline_box) * scale
        return item


def scoring_metric(sample: Sample) -> str | None:
    """The name validation scores ``sample`` under: its ``metric``, ``grounding_acc`` for a
    ``target_box`` without one, None when it has neither a box nor answers. Raises, naming
    the sample, when the metric is unknown or lacks what it scores."""
    where = f"sample {sample.id!r}"
    metric = sample.metric
    if metric is None and sample.target_box is not None:
        metric = "grounding_acc"
    if metric is None:
        if sample.answers:
            raise ValueError(f"{where} has answers but no metric to score them by")
        return None
    if validation_metric(metric, where).answer == "box":
        if sample.target_box is None:
            raise ValueError(f"{where}: metric {metric!r} scores a box, but it has no target_box")
    elif not sample.answers:
        raise ValueError(f"{where}: metric {metric!r} scores answers, but it has none")
    return metric


def last_question(sample: Sample) -> str:
    """The text of the last user turn, image placeholders removed ("" when there is none)."""
    users = [turn.content for turn in sample.turns if turn.role == "user"]
    return " ".join(users[-1].replace(IMAGE_TOKEN, " ").split()) if users else ""


def collate(items: Sequence[EncodedSample], pad_token_id: int) -> TrainingBatch:
    """Right-pad full sequences (training loss) and left-pad prompts (generation)."""
    batch_size = len(items)
    length = max(len(it["input_ids"]) for it in items)
    prompt_length = max(it["prompt_length"] for it in items)
    input_ids = torch.full((batch_size, length), pad_token_id)
    labels = torch.full((batch_size, length), IGNORE_INDEX)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    prompt_ids = torch.full((batch_size, prompt_length), pad_token_id)
    prompt_mask = torch.zeros(batch_size, prompt_length, dtype=torch.long)
    for row, it in enumerate(items):
        n, p = len(it["input_ids"]), it["prompt_length"]
        input_ids[row, :n] = it["input_ids"]
        labels[row, :n] = it["labels"]
        attention_mask[row, :n] = 1
        prompt_ids[row, prompt_length - p :] = it["input_ids"][:p]
        prompt_mask[row, prompt_length - p :] = 1
    return {
        "ids": [it["id"] for it in items],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": None,  # 0, 1, ... along each row
        "labels": labels,
        "pixel_values": torch.cat([it["pixel_values"] for it in items]),
        "tiles_per_sample": torch.tensor([len(it["pixel_values"]) for it in items]),
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "target_boxes": torch.stack([it["target_box"] for it in items]),
        "baseline_boxes": torch.stack([it["baseline_box"] for it in items]),
        "image_sizes": torch.stack([it["image_size"] for it in items]),
        "metrics": [it["metric"] for it in items],
        "answers": [it["answers"] for it in items],
        "baseline_answers": [it["baseline_answer"] for it in items],
        "questions": [it["question"] for it in items],
        "errors": [it["error"] for it in items],
    }
