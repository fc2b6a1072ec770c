"""Stand-ins for the categories of MM1.5's data mixtures, rendered from coloured shapes and
signs, so every training stage's recipe runs without downloads.

Conversation kinds (SFT): ``general`` (what is in the image), ``text_rich`` (read a sign),
``refer_ground`` (box answers or boxes in the question), ``science`` (which shape is
largest), ``math`` (count the shapes), ``code`` (the shapes as a list of calls),
``multi_image`` (which of two images has more shapes), ``text_only`` (addition, no image).
Document kinds (pre-training, no chat template): ``caption``, ``interleaved`` (images each
followed by its caption), ``text`` (sentences of sums) and ``ocr`` (a sign and its word).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Box, Sample, Turn
from mm15_components.data.synthetic import shapes, text
from mm15_components.data.synthetic.dataset import SeededDataset
from mm15_components.data.synthetic.shapes import Shape
from mm15_components.language.tokenizer import IMAGE_TOKEN

EncodeBox = Callable[[Box, tuple[int, int]], str]

GENERAL_QUESTION = "What shapes are in the image?"
SCIENCE_QUESTION = "Which shape is the largest?"
MATH_QUESTION = "How many shapes are there?"
CODE_QUESTION = "Write the shapes as code."
COMPARE_QUESTION = "Which image has more shapes, first or second?"
SUM_QUESTION = "What is {a} plus {b}?"
SUM_SENTENCE = "{a} plus {b} is {c}."


def _describe(found: list[Shape]) -> str:
    ordered = sorted(found, key=lambda s: s.box[:2])
    return " and ".join(f"a {s.colour} {s.kind}" for s in ordered)


def _shapes_image(rng: np.random.Generator, size: int):
    found = shapes.sample_shapes(rng, size)
    return found, shapes.draw_shapes(rng, found, size)


def _chat(question: str, answer: str, images: list) -> Sample:
    turns = [question_turn(question, len(images)), Turn("assistant", answer)]
    return Sample(turns=turns, images=images)


def general(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    found, image = _shapes_image(rng, size)
    return _chat(GENERAL_QUESTION, _describe(found), [image])


def text_rich(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    return text.text_sample(rng, size)


def refer_ground(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    make = shapes.grounding_sample if rng.random() < 0.5 else shapes.referring_sample
    return make(rng, size, encode_box)


def science(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    found, image = _shapes_image(rng, size)
    largest = max(found, key=lambda s: (s.box[2] - s.box[0]) * (s.box[3] - s.box[1]))
    return _chat(SCIENCE_QUESTION, f"the {largest.colour} {largest.kind}", [image])


def math(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    found, image = _shapes_image(rng, size)
    return _chat(MATH_QUESTION, str(len(found)), [image])


def code(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    found, image = _shapes_image(rng, size)
    calls = "; ".join(f"{s.kind}({s.colour})" for s in sorted(found, key=lambda s: s.box[:2]))
    return _chat(CODE_QUESTION, calls, [image])


def multi_image(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    while True:
        (first, a), (second, b) = _shapes_image(rng, size), _shapes_image(rng, size)
        if len(first) != len(second):
            break
    prompt = f"{IMAGE_TOKEN}\n{IMAGE_TOKEN}\n{COMPARE_QUESTION}"
    answer = "first" if len(first) > len(second) else "second"
    return Sample(turns=[Turn("user", prompt), Turn("assistant", answer)], images=[a, b])


def text_only(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    a, b = (int(v) for v in rng.integers(0, 50, 2))
    return _chat(SUM_QUESTION.format(a=a, b=b), str(a + b), [])


def caption(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    found, image = _shapes_image(rng, size)
    return Sample(turns=[Turn("assistant", f"{IMAGE_TOKEN}\n{_describe(found)}.")], images=[image])


def interleaved(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    pieces, images = [], []
    for _ in range(int(rng.integers(2, 4))):
        found, image = _shapes_image(rng, size)
        pieces += [IMAGE_TOKEN, f"{_describe(found)}."]
        images.append(image)
    return Sample(turns=[Turn("assistant", "\n".join(pieces))], images=images)


def text_document(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    sums = rng.integers(0, 50, (int(rng.integers(2, 5)), 2))
    sentences = [SUM_SENTENCE.format(a=a, b=b, c=a + b) for a, b in sums.tolist()]
    return Sample(turns=[Turn("assistant", " ".join(sentences))])


def ocr(rng: np.random.Generator, size: int, encode_box: EncodeBox) -> Sample:
    sign = text.text_sample(rng, size)
    word = sign.turns[-1].content
    return Sample(turns=[Turn("assistant", f"{IMAGE_TOKEN}\n{word}")], images=sign.images)


CHAT_KINDS: dict[str, Callable[[np.random.Generator, int, EncodeBox], Sample]] = {
    "general": general,
    "text_rich": text_rich,
    "refer_ground": refer_ground,
    "science": science,
    "math": math,
    "code": code,
    "multi_image": multi_image,
    "text_only": text_only,
}
DOCUMENT_KINDS: dict[str, Callable[[np.random.Generator, int, EncodeBox], Sample]] = {
    "caption": caption,
    "interleaved": interleaved,
    "text": text_document,
    "ocr": ocr,
}
KINDS = {**CHAT_KINDS, **DOCUMENT_KINDS}


def vocabulary() -> set[str]:
    """The words these stand-ins write beyond the shapes' and signs' own."""
    sentences = [
        GENERAL_QUESTION,
        SCIENCE_QUESTION,
        MATH_QUESTION,
        CODE_QUESTION,
        COMPARE_QUESTION,
        SUM_QUESTION,
        SUM_SENTENCE,
        "a and the first second",
    ]
    words = " ".join(sentences)
    for mark in "?.,;(){}":
        words = words.replace(mark, " ")
    return set(words.split())


class StandInDataset(SeededDataset):
    """``num_samples`` samples of one stand-in ``kind``; sample ``i`` depends only on
    ``(seed, split, kind, i)``, like ``SyntheticDataset``."""

    def __init__(
        self,
        kind: str,
        num_samples: int,
        image_size: int,
        encode_box: EncodeBox,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown synthetic stand-in {kind!r}; choose from {sorted(KINDS)}")
        super().__init__(num_samples, seed, split)
        self.kind = kind
        self.image_size = image_size
        self.encode_box = encode_box

    def __getitem__(self, index: int) -> Sample:
        rng = self.generator(index, zlib.crc32(self.kind.encode()))
        sample = KINDS[self.kind](rng, self.image_size, self.encode_box)
        sample.id = f"{self.kind}-{self.split}-{index}"
        return sample
