"""The sample schema every data source produces: images plus conversation turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

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
