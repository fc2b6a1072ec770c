"""Named icons drawn with PIL primitives, so icon recognition has a ground-truth name and
needs no icon font or image files."""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import ImageDraw

Colour = tuple[int, int, int]
Frame = tuple[float, float, float, float]
"""``(x, y, side, stroke)``: the square the glyph fills and the line width."""


def _home(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.polygon([(x, y + 0.5 * s), (x + 0.5 * s, y + 0.05 * s), (x + s, y + 0.5 * s)], fill=c)
    draw.rectangle((x + 0.18 * s, y + 0.45 * s, x + 0.82 * s, y + 0.95 * s), fill=c)


def _search(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.ellipse((x + 0.05 * s, y + 0.05 * s, x + 0.65 * s, y + 0.65 * s), outline=c, width=w)
    draw.line((x + 0.58 * s, y + 0.58 * s, x + 0.95 * s, y + 0.95 * s), fill=c, width=w)


def _settings(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    cx, cy = x + s / 2, y + s / 2
    for k in range(8):
        angle = k * math.pi / 4
        dx, dy = math.cos(angle) * 0.45 * s, math.sin(angle) * 0.45 * s
        draw.line((cx, cy, cx + dx, cy + dy), fill=c, width=max(2, int(w * 1.5)))
    draw.ellipse((cx - 0.33 * s, cy - 0.33 * s, cx + 0.33 * s, cy + 0.33 * s), fill=c)
    draw.ellipse((cx - 0.12 * s, cy - 0.12 * s, cx + 0.12 * s, cy + 0.12 * s), fill=bg)


def _heart(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.ellipse((x, y + 0.1 * s, x + 0.55 * s, y + 0.6 * s), fill=c)
    draw.ellipse((x + 0.45 * s, y + 0.1 * s, x + s, y + 0.6 * s), fill=c)
    draw.polygon(
        [(x + 0.03 * s, y + 0.45 * s), (x + 0.97 * s, y + 0.45 * s), (x + s / 2, y + s)], fill=c
    )


def _star(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    cx, cy = x + s / 2, y + s / 2
    points = []
    for k in range(10):
        radius = 0.5 * s if k % 2 == 0 else 0.2 * s
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=c)


def _bell(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.pieslice((x + 0.15 * s, y + 0.05 * s, x + 0.85 * s, y + 0.95 * s), 180, 360, fill=c)
    draw.rectangle((x + 0.15 * s, y + 0.5 * s, x + 0.85 * s, y + 0.75 * s), fill=c)
    draw.rectangle((x + 0.05 * s, y + 0.72 * s, x + 0.95 * s, y + 0.8 * s), fill=c)
    draw.ellipse((x + 0.4 * s, y + 0.8 * s, x + 0.6 * s, y + s), fill=c)


def _user(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.ellipse((x + 0.3 * s, y, x + 0.7 * s, y + 0.4 * s), fill=c)
    draw.pieslice((x + 0.05 * s, y + 0.5 * s, x + 0.95 * s, y + 1.4 * s), 180, 360, fill=c)


def _mail(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.rectangle((x, y + 0.2 * s, x + s, y + 0.8 * s), outline=c, width=w)
    draw.line((x, y + 0.2 * s, x + s / 2, y + 0.55 * s, x + s, y + 0.2 * s), fill=c, width=w)


def _plus(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.rectangle((x + 0.4 * s, y, x + 0.6 * s, y + s), fill=c)
    draw.rectangle((x, y + 0.4 * s, x + s, y + 0.6 * s), fill=c)


def _close(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.line((x, y, x + s, y + s), fill=c, width=max(2, 2 * w))
    draw.line((x, y + s, x + s, y), fill=c, width=max(2, 2 * w))


def _menu(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    for row in (0.15, 0.45, 0.75):
        draw.rectangle((x, y + row * s, x + s, y + (row + 0.12) * s), fill=c)


def _back(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.line((x + 0.7 * s, y, x + 0.2 * s, y + s / 2, x + 0.7 * s, y + s), fill=c, width=2 * w)


def _play(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.polygon([(x + 0.15 * s, y), (x + s, y + s / 2), (x + 0.15 * s, y + s)], fill=c)


def _camera(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.rectangle((x, y + 0.25 * s, x + s, y + 0.9 * s), fill=c)
    draw.rectangle((x + 0.3 * s, y + 0.1 * s, x + 0.7 * s, y + 0.25 * s), fill=c)
    draw.ellipse((x + 0.3 * s, y + 0.37 * s, x + 0.7 * s, y + 0.77 * s), fill=bg)


def _lock(draw: ImageDraw.ImageDraw, f: Frame, c: Colour, bg: Colour) -> None:
    x, y, s, w = f
    draw.arc((x + 0.22 * s, y, x + 0.78 * s, y + 0.7 * s), 180, 360, fill=c, width=w)
    draw.line((x + 0.22 * s, y + 0.35 * s, x + 0.22 * s, y + 0.5 * s), fill=c, width=w)
    draw.line((x + 0.78 * s, y + 0.35 * s, x + 0.78 * s, y + 0.5 * s), fill=c, width=w)
    draw.rectangle((x + 0.1 * s, y + 0.45 * s, x + 0.9 * s, y + s), fill=c)


GLYPHS: dict[str, Callable[[ImageDraw.ImageDraw, Frame, Colour, Colour], None]] = {
    "home": _home,
    "search": _search,
    "settings": _settings,
    "heart": _heart,
    "star": _star,
    "bell": _bell,
    "user": _user,
    "mail": _mail,
    "plus": _plus,
    "close": _close,
    "menu": _menu,
    "back": _back,
    "play": _play,
    "camera": _camera,
    "lock": _lock,
}
"""Icon name -> how it is drawn."""


def draw_glyph(
    draw: ImageDraw.ImageDraw,
    name: str,
    box: tuple[int, int, int, int],
    colour: Colour,
    background: Colour,
) -> None:
    """Draw icon ``name`` in ``colour`` centred in ``box`` (a square of the box's shorter
    side); holes (the gear's, the lens) take ``background``."""
    x1, y1, x2, y2 = box
    side = max(1.0, min(x2 - x1, y2 - y1) - 1.0)
    x = x1 + (x2 - x1 - side) / 2
    y = y1 + (y2 - y1 - side) / 2
    GLYPHS[name](draw, (x, y, side, max(1, round(side / 8))), colour, background)
