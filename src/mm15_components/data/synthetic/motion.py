"""Clips of moving coloured shapes, rendered in memory: questions about what happens over time.

Each clip shows 1..3 shapes of distinct colours on a still, noisy background. A shape appears
at some frame (no two at the same one), then moves at a constant speed in one of four
directions until the end; the rectangles the shapes sweep never overlap, so nothing is ever
hidden. Three questions need more than one frame to answer: the direction a shape moves, which
shape appears first, and how many shapes appear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mm15_components.data.synthetic.shapes import COLOURS, KINDS, Shape, _overlap, draw_shapes

DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
QUESTIONS = {
    "direction": "Which way does the {colour} {kind} move?",
    "order": "Which shape appears first?",
    "count": "How many shapes appear?",
}


@dataclass(frozen=True)
class MovingShape:
    """A square-bounded shape of side ``side`` whose top-left corner is at ``start`` on frame
    ``appears`` and moves ``speed`` pixels per frame towards ``direction``."""

    kind: str
    colour: str
    side: int
    start: tuple[float, float]
    direction: str
    speed: float
    appears: int

    def box_at(self, frame: int) -> tuple[int, int, int, int] | None:
        """Pixel box ``(x1, y1, x2, y2)`` on ``frame``; None before the shape appears."""
        if frame < self.appears:
            return None
        dx, dy = DIRECTIONS[self.direction]
        step = self.speed * (frame - self.appears)
        x, y = round(self.start[0] + dx * step), round(self.start[1] + dy * step)
        return (x, y, x + self.side, y + self.side)


@dataclass(frozen=True)
class MotionClip:
    """The shapes of one clip (in order of appearance) and its frames."""

    shapes: list[MovingShape]
    frames: list[Image.Image]


def render_clip(
    rng: np.random.Generator, size: int, num_frames: int, max_shapes: int = 3
) -> MotionClip:
    """A clip of ``num_frames`` frames of ``size`` x ``size`` pixels, drawn from ``rng``."""
    if num_frames < 2:
        raise ValueError(f"a motion clip needs at least 2 frames, got {num_frames}")
    # distinct appearance frames in the first half, so every shape is seen moving for a while
    count = min(int(rng.integers(1, max_shapes + 1)), num_frames // 2)
    appears = sorted(rng.choice(num_frames // 2, size=count, replace=False).tolist())
    colours = rng.choice(list(COLOURS), size=count, replace=False).tolist()
    shapes: list[MovingShape] = []
    swept: list[tuple[int, int, int, int]] = []
    for appear, colour in zip(appears, colours, strict=True):
        for _attempt in range(30):
            side = int(rng.uniform(0.15, 0.25) * size)
            direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
            travel = int(rng.uniform(0.3, 0.6) * (size - side))
            dx, dy = DIRECTIONS[direction]
            x = int(rng.integers(max(0, -dx * travel), size - side - max(0, dx * travel) + 1))
            y = int(rng.integers(max(0, -dy * travel), size - side - max(0, dy * travel) + 1))
            end = (x + dx * travel, y + dy * travel)
            area = (min(x, end[0]), min(y, end[1]), max(x, end[0]) + side, max(y, end[1]) + side)
            if not any(_overlap(area, other) for other in swept):
                break
        else:
            continue
        kind = KINDS[int(rng.integers(len(KINDS)))]
        speed = travel / (num_frames - 1 - appear)
        shapes.append(MovingShape(kind, colour, side, (x, y), direction, speed, appear))
        swept.append(area)
    background_seed = int(rng.integers(2**32))
    frames = []
    for frame in range(num_frames):
        visible = [
            Shape(s.kind, s.colour, box) for s in shapes if (box := s.box_at(frame)) is not None
        ]
        # the same seed every frame: a still background, only the shapes change
        frames.append(draw_shapes(np.random.default_rng(background_seed), visible, size))
    return MotionClip(shapes, frames)


def question_answer(rng: np.random.Generator, clip: MotionClip, question: str) -> tuple[str, str]:
    """A question of kind ``question`` about ``clip`` and its short answer."""
    if question == "direction":
        target = clip.shapes[int(rng.integers(len(clip.shapes)))]
        text = QUESTIONS["direction"].format(colour=target.colour, kind=target.kind)
        return text, target.direction
    if question == "order":
        first = clip.shapes[0]
        return QUESTIONS["order"], f"{first.colour} {first.kind}"
    if question == "count":
        return QUESTIONS["count"], str(len(clip.shapes))
    raise ValueError(f"unknown motion question {question!r}; choose from {sorted(QUESTIONS)}")


def vocabulary() -> set[str]:
    """The words of the questions and answers, and ``s``, the unit of timestamps such as
    ``"{seconds:.1f} s:"`` (numbers and punctuation are tokens of the word tokenizer already)."""
    words = {w for q in QUESTIONS.values() for w in q.replace("?", "").split()}
    return (words - {"{colour}", "{kind}"}) | set(DIRECTIONS) | set(COLOURS) | set(KINDS) | {"s"}
