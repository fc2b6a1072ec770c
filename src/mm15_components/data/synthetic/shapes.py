"""Coloured shapes with known boxes: grounding questions answered with a box."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Sample, Turn

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
KINDS = ("circle", "square", "triangle")
QUESTION = "Where is the {colour} {kind}?"
REFERRING_QUESTION = "What colour is the shape at {box}?"
FIND_ALL_QUESTION = "Find every {kind}."
NONE_FOUND = "none"


@dataclass(frozen=True)
class Shape:
    """A shape covering the pixels ``x1 <= x < x2``, ``y1 <= y < y2``."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]


# Each task below draws its shapes first, from the sample's generator as given: the dataset's
# drawn_shapes relies on it to read a sample's shapes back.
def sample_shapes(
    rng: np.random.Generator,
    size: int,
    max_shapes: int = 3,
    min_side: float = 0.25,
    max_side: float = 0.6,
) -> list[Shape]:
    """1..max_shapes non-overlapping shapes of distinct colours, sides drawn from
    ``[min_side, max_side] * size`` independently per axis so sizes, aspect ratios and
    positions all vary (a constant box answer then rarely reaches IoU 0.5).

    Distinct colours let a small model find the shape asked for by its colour, a feature it
    reads off the pixels early in training; the kind is still drawn and named, and the
    find-all task asks for it alone.
    """
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):
            w, h = (int(v) for v in rng.uniform(min_side, max_side, 2) * size)
            w, h = max(w, 3), max(h, 3)
            x1, y1 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x1, y1, x1 + w, y1 + h)
            if not any(_overlap(box, s.box) for s in shapes):
                break
        else:
            continue
        taken = {s.colour for s in shapes}
        options = [(c, k) for c in COLOURS for k in KINDS if c not in taken]
        colour, kind = options[int(rng.integers(len(options)))]
        shapes.append(Shape(kind, colour, box))
    return shapes


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_shapes(rng: np.random.Generator, shapes: list[Shape], size: int) -> Image.Image:
    """Render shapes on a dark, slightly noisy background."""
    background = rng.integers(0, 60, 3)
    pixels = np.clip(background + rng.integers(-12, 13, (size, size, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        x1, y1, x2, y2 = shape.box
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
    return image


def grounding_sample(rng: np.random.Generator, size: int, encode_box, questions: int = 1) -> Sample:
    """ "Where is the red circle?" -> the box of that shape, written by ``encode_box``.

    With ``questions > 1`` the conversation goes on about the image's other shapes (up to
    ``questions`` turns, one per shape): more box answers per encoded image. ``target_box``
    is the last answer's box.
    """
    shapes = sample_shapes(rng, size)
    image = draw_shapes(rng, shapes, size)
    first = int(rng.integers(len(shapes)))
    others = [i for i in rng.permutation(len(shapes)).tolist() if i != first]
    turns = []
    for number, index in enumerate([first, *others][:questions]):
        target = shapes[index]
        question = QUESTION.format(colour=target.colour, kind=target.kind)
        user = question_turn(question) if number == 0 else Turn("user", question)
        turns += [user, Turn("assistant", encode_box(target.box, (size, size)))]
    return Sample(turns=turns, images=[image], target_box=tuple(float(v) for v in target.box))


def referring_sample(rng: np.random.Generator, size: int, encode_box) -> Sample:
    """ "What colour is the shape at [x1, y1, x2, y2]?" -> its colour: the box is in the
    question, written by the same codec as grounding answers."""
    shapes = sample_shapes(rng, size)
    image = draw_shapes(rng, shapes, size)
    target = shapes[int(rng.integers(len(shapes)))]
    question = REFERRING_QUESTION.format(box=encode_box(target.box, (size, size)))
    turns = [question_turn(question), Turn("assistant", target.colour)]
    return Sample(turns=turns, images=[image])


def find_all_sample(rng: np.random.Generator, size: int, encode_box) -> Sample:
    """ "Find every triangle." -> the boxes of all triangles, left to right, or "none"."""
    shapes = sample_shapes(rng, size)
    image = draw_shapes(rng, shapes, size)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    found = sorted((s.box for s in shapes if s.kind == kind), key=lambda box: box[:2])
    answer = " ".join(encode_box(box, (size, size)) for box in found) or NONE_FOUND
    turns = [question_turn(FIND_ALL_QUESTION.format(kind=kind)), Turn("assistant", answer)]
    return Sample(turns=turns, images=[image])


def vocabulary() -> set[str]:
    questions = " ".join(
        [
            QUESTION.format(colour="", kind=""),
            REFERRING_QUESTION.format(box=""),
            FIND_ALL_QUESTION.format(kind=""),
        ]
    )
    words = questions.replace("?", " ").replace(".", " ").split()
    return set(COLOURS) | set(KINDS) | set(words) | {NONE_FOUND}
