"""Rendered words on a sign: OCR-style questions answered with the word."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mm15_components.data.schema import Sample, Turn

WORDS = (
    "open closed stop exit enter push pull sale hotel bank cafe park taxi bus train "
    "north south east west left right up down food water fire help info news shop "
    "police museum school market garden station"
).split()
QUESTION = "What does the sign say?"


def text_sample(rng: np.random.Generator, size: int) -> Sample:
    """A word in a light sign at a random place; the answer is the word."""
    word = WORDS[int(rng.integers(len(WORDS)))]
    font = ImageFont.load_default(size=max(8, size // 5))
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    width, height = right - left + 4, bottom - top + 4
    x = int(rng.integers(0, max(1, size - width)))
    y = int(rng.integers(0, max(1, size - height)))
    draw.rectangle(
        (x, y, x + width, y + height), fill=tuple(int(v) for v in rng.integers(180, 256, 3))
    )
    draw.text((x + 2 - left, y + 2 - top), word, fill=(0, 0, 0), font=font)
    turns = [Turn("user", f"{QUESTION}\n<image>"), Turn("assistant", word)]
    return Sample(turns=turns, images=[image])


def vocabulary() -> set[str]:
    return set(WORDS) | set(QUESTION.replace("?", "").split())
