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

    ``target_box`` is set on grounding samples: the pixel box the last answer encodes, so
    evaluation can score a generated answer by IoU.
    """

    turns: list[Turn]
    images: list[Image.Image] = field(default_factory=list)
    id: str = ""
    target_box: Box | None = None


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
