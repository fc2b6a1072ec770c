"""The sample schema every data source produces (images plus conversation turns), and the
contract between data and model: what an encoded sample and each kind of batch hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from PIL import Image
from torch import Tensor

Role = Literal["user", "assistant"]
Box = tuple[float, float, float, float]
"""A box ``(x1, y1, x2, y2)`` in pixels of the original image."""


@dataclass(frozen=True)
class Turn:
    """One message. User text holds one ``<image>`` placeholder per image of the sample."""

    role: Role
    content: str


@dataclass
class Sample:
    """One training or evaluation example.

    Validation scores a sample by generating the last answer when it has a ``target_box`` or
    ``answers``, and logs the score as ``val/<metric>`` (the names are
    ``metrics.VALIDATION_METRICS``):

    - ``target_box``: the pixel box the last answer encodes, scored by IoU (``metric``
      defaults to ``grounding_acc``).
    - ``answers``: reference answers to the last question, scored by ``metric`` (required).
    - ``baseline_answer``: an answer scored beside the model by the same metric, logged as
      ``val/<metric>_majority`` (e.g. the most common answer of the training data).
    """

    turns: list[Turn]
    images: list[Image.Image] = field(default_factory=list)
    id: str = ""
    target_box: Box | None = None
    answers: list[str] = field(default_factory=list)
    metric: str | None = None
    baseline_answer: str | None = None


@dataclass
class SampleOutline:
    """What a sample's token count depends on, read without decoding its images: its turns and
    each image's ``(height, width)``."""

    turns: list[Turn]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of(cls, sample: Sample) -> SampleOutline:
        """The outline of a sample already read."""
        return cls(sample.turns, [image.size[::-1] for image in sample.images])


class EncodedSample(TypedDict):
    """One sample as model inputs (``collate.SampleEncoder``): what the collate functions read.

    ``labels`` are ``labels.IGNORE_INDEX`` outside answers; ``input_ids[:prompt_length]`` is
    the prompt the last answer continues. Boxes are pixels of the first image, NaN when
    absent; ``image_size`` is that image's ``(height, width)``. An ``error`` (a sample the
    data could not read) marks it unscored.
    """

    id: str
    input_ids: Tensor
    labels: Tensor
    prompt_length: int
    pixel_values: Tensor
    target_box: Tensor
    baseline_box: Tensor
    image_size: Tensor
    metric: str | None
    answers: list[str]
    baseline_answer: str | None
    question: str
    error: str | None


class QueryItem(EncodedSample):
    """An :class:`EncodedSample` to predict on, with its original image, the name its
    outputs are written under, and the question asked (``query.QueryDataModule``)."""

    image: Image.Image
    name: str
    query: str


class LossInputs(TypedDict):
    """What the loss reads, common to padded and packed batches. ``pixel_values`` are the
    tiles of every image of the batch, sample after sample (``tiles_per_sample`` of each)."""

    ids: list[str]
    input_ids: Tensor
    attention_mask: Tensor | None
    position_ids: Tensor | None
    labels: Tensor
    pixel_values: Tensor
    tiles_per_sample: Tensor


class TrainingBatch(LossInputs):
    """``collate.collate``: one sample per row, right-padded (``attention_mask``; no
    ``position_ids``), and the prompts left-padded for generation with what validation scores
    each answer by (the :class:`EncodedSample` fields, one list or stacked tensor each)."""

    prompt_ids: Tensor
    prompt_mask: Tensor
    target_boxes: Tensor
    baseline_boxes: Tensor
    image_sizes: Tensor
    metrics: list[str | None]
    answers: list[list[str]]
    baseline_answers: list[str | None]
    questions: list[str]
    errors: list[str | None]


class PackedBatch(LossInputs):
    """``packing.collate_packed``: several samples per row, each attending only to itself
    (``position_ids`` restart at every sample; no ``attention_mask``); training only."""


class MixtureFields(TypedDict):
    """What a mixture's training batches carry besides a :class:`TrainingBatch`'s or a
    :class:`PackedBatch`'s keys: each sample's ``categories``, the bad samples ``skipped`` to
    make them (``mixture.collate_with_categories``), and the counts so far of both,
    ``data_counts`` (``mixture.MixtureCounts``, for ``MixtureStatsLogger``)."""

    categories: list[str]
    skipped: int
    data_counts: dict[str, Any]


class PredictBatch(TrainingBatch):
    """``query.collate_query``: a :class:`TrainingBatch` plus each sample's original image,
    output file name and question, for ``predict.PredictionWriter``."""

    images: list[Image.Image]
    names: list[str]
    queries: list[str]
