"""Synthetic phone screens: portrait layouts of widgets, each element's class, text and box
kept, so UI referring and grounding questions have exact answers.

A screen is laid out first (:func:`sample_screen`, all the randomness) and drawn after
(:func:`draw_screen`, none), so statistics over many screens (the mean answer box, the most
common class) need no drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mm15_components.data.synthetic.glyphs import GLYPHS, Colour, draw_glyph

DEVICES: dict[str, tuple[int, int]] = {"iphone": (1170, 2532), "android": (1080, 2400)}
"""Device -> native (width, height): the aspect ratios screens are drawn at."""

WIDGETS = (
    "button",
    "textfield",
    "toggle",
    "checkbox",
    "slider",
    "icon",
    "text",
    "listitem",
    "card",
)
"""Classes of the content elements."""
BARS = ("statusbar", "navbar", "tabbar")
"""Classes of the system and navigation bars (with ``bars=True``)."""

WORDS = (
    "Settings Profile Search Home Messages Photos Music Wallet Notes Maps Weather Clock Mail "
    "Calendar News Login Cancel Save Done Next Send Share Edit Delete Continue Submit Account "
    "Privacy Battery Sound Display Help About Email Password Name Phone Friends Library Videos "
    "Health Orders Cart Payments Travel Books Games Alarms Contacts"
).split()
"""Words written on screens (titles, buttons, labels, rows)."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Element:
    """One element covering the pixels ``x1 <= x < x2``, ``y1 <= y < y2``.

    ``text`` is what it shows: its words, the icon's name, a control's state (``on``/``off``,
    ``checked``/``unchecked``) or a slider's value in percent.
    """

    kind: str
    box: Box
    text: str = ""


@dataclass(frozen=True)
class Theme:
    name: str
    background: Colour
    surface: Colour
    ink: Colour
    muted: Colour
    accent: Colour


@dataclass(frozen=True)
class Screen:
    """A laid-out screen: its size in pixels, theme, title and elements (bars first)."""

    width: int
    height: int
    device: str
    theme: Theme
    title: str
    elements: tuple[Element, ...]

    def of_kind(self, kind: str) -> list[Element]:
        """The elements of class ``kind``, top to bottom, then left to right."""
        return sorted((e for e in self.elements if e.kind == kind), key=lambda e: e.box[1::-1])


ACCENTS: tuple[Colour, ...] = (
    (0, 122, 255),
    (52, 199, 89),
    (255, 59, 48),
    (255, 149, 0),
    (175, 82, 222),
    (0, 150, 136),
)


@lru_cache(maxsize=256)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's default font (shipped with Pillow) at ``size`` px."""
    return ImageFont.load_default(size=max(6, size))


def text_box(text: str, size: int, x: int, y: int) -> Box:
    """The pixel box ``text`` covers when drawn at ``(x, y)`` in ``font(size)``."""
    left, top, right, bottom = font(size).getbbox(text)
    return (x + left, y + top, x + right + 1, y + bottom + 1)


def fitting_size(text: str, width: float, height: float) -> int:
    """The largest font size (at most ``height``) at which ``text`` fits ``width``; at least 6
    (the text is then cropped by the box it is drawn in)."""
    size = max(6, int(height))
    length = font(size).getlength(text)
    if length > width:
        size = max(6, int(size * width / length))
    return size


def _theme(rng: np.random.Generator) -> Theme:
    accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
    shade = int(rng.integers(0, 20))
    if rng.random() < 0.5:
        return Theme(
            "light", (250 - shade,) * 3, (235 - shade,) * 3, (20, 20, 20), (130, 130, 130), accent
        )
    return Theme(
        "dark", (10 + shade,) * 3, (40 + shade,) * 3, (240, 240, 240), (140, 140, 140), accent
    )


def _word(rng: np.random.Generator, used: set[str]) -> str:
    options = [w for w in WORDS if w not in used]
    word = options[int(rng.integers(len(options)))]
    used.add(word)
    return word


def sample_screen(
    rng: np.random.Generator,
    width: int,
    widgets: Sequence[str] = WIDGETS,
    elements: tuple[int, int] = (3, 7),
    bars: bool = True,
    distinct: bool = False,
) -> Screen:
    """Lay out a portrait screen ``width`` pixels wide (the height follows a device's aspect
    ratio): optional status, navigation and tab bars, and between them ``elements[0]`` to
    ``elements[1]`` content elements of the classes ``widgets``, one per row, rows of random
    heights. Fewer elements make each larger. ``distinct``: no class twice among the content
    rows, so "the toggle" names one. Every text on a screen is a different word.
    """
    unknown = set(widgets) - set(WIDGETS)
    if unknown or not widgets:
        raise ValueError(f"unknown widget classes {sorted(unknown)}; choose from {list(WIDGETS)}")
    low, high = elements
    if not 1 <= low <= high:
        raise ValueError(f"elements must be (low, high) with 1 <= low <= high, got {elements}")
    if distinct and low > len(widgets):
        raise ValueError(f"distinct screens need elements[0] <= {len(widgets)} classes")
    device = list(DEVICES)[int(rng.integers(len(DEVICES)))]
    native_w, native_h = DEVICES[device]
    height = round(width * native_h / native_w)
    theme = _theme(rng)
    used: set[str] = set()
    title = _word(rng, used)
    placed: list[Element] = []
    margin = max(1, round(0.05 * width))
    top, bottom = 0, height
    if bars:
        status_h = max(2, round(0.045 * height))
        nav_h = max(3, round(0.065 * height))
        tab_h = max(3, round(0.075 * height))
        placed.append(Element("statusbar", (0, 0, width, status_h), "9:41"))
        placed.append(Element("navbar", (0, status_h, width, status_h + nav_h), title))
        tab_top = height - tab_h
        placed.append(Element("tabbar", (0, tab_top, width, height)))
        tabs = int(rng.integers(3, 6))
        if "icon" in widgets:
            names = rng.choice(list(GLYPHS), tabs, replace=False)
            side = round(0.6 * tab_h)
            for k, name in enumerate(names):
                cx = round((k + 0.5) * width / tabs)
                cy = tab_top + tab_h // 2
                box = (cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side)
                placed.append(Element("icon", box, str(name)))
        top, bottom = status_h + nav_h, tab_top
    count = int(rng.integers(low, high + 1))
    if distinct:
        count = min(count, len(widgets))
    kinds = rng.choice(list(widgets), count, replace=not distinct).tolist()
    gap = max(1, round(0.015 * height))
    span = (bottom - top - gap * (count + 1)) * rng.uniform(0.75, 1.0)
    heights = rng.uniform(0.7, 1.3, count)
    heights = np.maximum(3, (heights / heights.sum() * span).astype(int))
    if heights.sum() + gap * (count + 1) > bottom - top:
        raise ValueError(f"a {width} px wide screen has no room for {count} elements")
    y = top + gap + int(rng.integers(0, max(1, bottom - top - gap * (count + 1) - heights.sum())))
    for kind, row_h in zip(kinds, heights.tolist(), strict=True):
        placed.append(_place(rng, kind, margin, y, width - margin, row_h, used))
        y += row_h + gap
    return Screen(width, height, device, theme, title, tuple(placed))


def _place(
    rng: np.random.Generator, kind: str, left: int, top: int, right: int, row_h: int, used: set[str]
) -> Element:
    """One element of ``kind`` inside the row ``left..right`` x ``top..top+row_h``."""
    avail = right - left

    def span(w: int, h: int) -> Box:
        w, h = max(2, min(w, avail)), max(2, min(h, row_h))
        x = left + int(rng.integers(0, avail - w + 1))
        y = top + (row_h - h) // 2
        return (x, y, x + w, y + h)

    if kind == "button":
        h = int(row_h * rng.uniform(0.6, 0.9))
        return Element(kind, span(int(avail * rng.uniform(0.4, 1.0)), h), _word(rng, used))
    if kind == "textfield":
        h = int(row_h * rng.uniform(0.5, 0.8))
        return Element(kind, span(int(avail * rng.uniform(0.7, 1.0)), h), _word(rng, used))
    if kind == "toggle":
        h = int(row_h * rng.uniform(0.45, 0.7))
        state = "on" if rng.random() < 0.5 else "off"
        return Element(kind, span(min(int(h * 1.9), avail // 2), h), state)
    if kind == "checkbox":
        side = min(int(row_h * rng.uniform(0.45, 0.7)), avail // 3)
        state = "checked" if rng.random() < 0.5 else "unchecked"
        return Element(kind, span(side, side), state)
    if kind == "slider":
        h = int(row_h * rng.uniform(0.3, 0.5))
        value = int(rng.integers(0, 101))
        return Element(kind, span(int(avail * rng.uniform(0.6, 1.0)), h), str(value))
    if kind == "icon":
        side = min(int(row_h * rng.uniform(0.5, 0.9)), avail)
        name = list(GLYPHS)[int(rng.integers(len(GLYPHS)))]
        return Element(kind, span(side, side), name)
    if kind == "text":
        word = _word(rng, used)
        size = fitting_size(word, avail, row_h * rng.uniform(0.4, 0.8))
        x1, y1, x2, y2 = text_box(word, size, 0, 0)
        w, h = min(x2 - x1, avail), min(y2 - y1, row_h)
        x = left + int(rng.integers(0, avail - w + 1))
        y = top + (row_h - h) // 2
        return Element(kind, (x, y, x + w, y + h), word)
    if kind == "listitem":
        h = int(row_h * rng.uniform(0.8, 1.0))
        return Element(
            kind, (left, top + (row_h - h) // 2, right, top + (row_h + h) // 2), _word(rng, used)
        )
    h = int(row_h * rng.uniform(0.85, 1.0))  # card
    return Element(kind, span(int(avail * rng.uniform(0.8, 1.0)), h), _word(rng, used))


def draw_screen(screen: Screen) -> Image.Image:
    """Render ``screen``; deterministic (all randomness is in the layout)."""
    theme = screen.theme
    image = Image.new("RGB", (screen.width, screen.height), theme.background)
    draw = ImageDraw.Draw(image)
    for element in screen.elements:
        DRAWERS[element.kind](draw, element, screen)
    return image


def _centred_text(
    draw: ImageDraw.ImageDraw, box: Box, text: str, colour: Colour, scale: float
) -> None:
    x1, y1, x2, y2 = box
    size = fitting_size(text, 0.9 * (x2 - x1), scale * (y2 - y1))
    draw.text(((x1 + x2) / 2, (y1 + y2) / 2), text, fill=colour, font=font(size), anchor="mm")


def _left_text(
    draw: ImageDraw.ImageDraw, box: Box, text: str, colour: Colour, scale: float
) -> None:
    x1, y1, x2, y2 = box
    pad = max(1, (y2 - y1) // 4)
    size = fitting_size(text, x2 - x1 - 2 * pad, scale * (y2 - y1))
    draw.text((x1 + pad, (y1 + y2) / 2), text, fill=colour, font=font(size), anchor="lm")


def _radius(box: Box) -> int:
    return max(0, min(box[2] - box[0], box[3] - box[1]) // 4)


def _last(box: Box) -> Box:
    """The box's last pixel row and column inclusive, as PIL draws it."""
    return (box[0], box[1], box[2] - 1, box[3] - 1)


def _statusbar(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = e.box
    h = y2 - y1
    _left_text(draw, (x1 + h, y1, x2, y2), e.text, s.theme.ink, 0.6)
    draw.rectangle((x2 - 2.5 * h, y1 + 0.3 * h, x2 - 1.2 * h, y2 - 0.3 * h), fill=s.theme.ink)


def _navbar(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    draw.rectangle(_last(e.box), fill=s.theme.surface)
    _centred_text(draw, e.box, e.text, s.theme.ink, 0.5)


def _tabbar(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    draw.rectangle(_last(e.box), fill=s.theme.surface)


def _button(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    draw.rounded_rectangle(_last(e.box), _radius(e.box), fill=s.theme.accent)
    _centred_text(draw, e.box, e.text, (255, 255, 255), 0.5)


def _textfield(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    width = max(1, (e.box[3] - e.box[1]) // 12)
    draw.rounded_rectangle(_last(e.box), _radius(e.box) // 2, outline=s.theme.muted, width=width)
    _left_text(draw, e.box, e.text, s.theme.muted, 0.45)


def _toggle(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = _last(e.box)
    on = e.text == "on"
    draw.rounded_rectangle(
        (x1, y1, x2, y2), (y2 - y1) // 2, fill=s.theme.accent if on else s.theme.muted
    )
    pad = max(1, (y2 - y1) // 10)
    side = y2 - y1 - 2 * pad
    knob_x = x2 - pad - side if on else x1 + pad
    draw.ellipse((knob_x, y1 + pad, knob_x + side, y2 - pad), fill=(255, 255, 255))


def _checkbox(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = _last(e.box)
    side = x2 - x1
    if e.text == "checked":
        draw.rounded_rectangle((x1, y1, x2, y2), side // 5, fill=s.theme.accent)
        points = [
            (x1 + 0.2 * side, y1 + 0.5 * side),
            (x1 + 0.42 * side, y1 + 0.75 * side),
            (x1 + 0.8 * side, y1 + 0.25 * side),
        ]
        draw.line(points, fill=(255, 255, 255), width=max(1, side // 8))
    else:
        draw.rounded_rectangle(
            (x1, y1, x2, y2), side // 5, outline=s.theme.muted, width=max(1, side // 10)
        )


def _slider(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = _last(e.box)
    h = y2 - y1
    cy = (y1 + y2) / 2
    track = max(1, h // 5)
    knob_x = x1 + h / 2 + (x2 - x1 - h) * int(e.text) / 100
    draw.rectangle((x1, cy - track / 2, x2, cy + track / 2), fill=s.theme.muted)
    draw.rectangle((x1, cy - track / 2, knob_x, cy + track / 2), fill=s.theme.accent)
    draw.ellipse((knob_x - h / 2, y1, knob_x + h / 2, y2), fill=s.theme.ink)


def _icon(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    draw_glyph(draw, e.text, e.box, s.theme.accent, s.theme.background)


def _text(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = e.box
    size = fitting_size(e.text, x2 - x1, 2 * (y2 - y1))
    while size > 6:  # the largest size whose ink fits the box (the layout's own size)
        left, top, right, bottom = text_box(e.text, size, 0, 0)
        if right - left <= x2 - x1 and bottom - top <= y2 - y1:
            break
        size -= 1
    left, top, _, _ = font(size).getbbox(e.text)
    draw.text((x1 - left, y1 - top), e.text, fill=s.theme.ink, font=font(size))


def _listitem(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = _last(e.box)
    draw.rectangle((x1, y1, x2, y2), fill=s.theme.surface)
    draw.line((x1, y2, x2, y2), fill=s.theme.muted, width=max(1, (y2 - y1) // 20))
    _left_text(draw, e.box, e.text, s.theme.ink, 0.45)
    h = y2 - y1
    draw.line(
        (x2 - 0.5 * h, y1 + 0.3 * h, x2 - 0.3 * h, y1 + 0.5 * h, x2 - 0.5 * h, y1 + 0.7 * h),
        fill=s.theme.muted,
        width=max(1, h // 12),
    )


def _card(draw: ImageDraw.ImageDraw, e: Element, s: Screen) -> None:
    x1, y1, x2, y2 = _last(e.box)
    draw.rounded_rectangle(
        (x1, y1, x2, y2),
        _radius(e.box) // 2,
        fill=s.theme.surface,
        outline=s.theme.muted,
        width=max(1, (y2 - y1) // 40),
    )
    h = y2 - y1
    _left_text(draw, (x1, y1, x2, y1 + h // 2), e.text, s.theme.ink, 0.5)
    pad = max(1, h // 8)
    for k in range(2):
        line_y = y1 + h * (0.6 + 0.15 * k)
        draw.rectangle(
            (
                x1 + pad,
                line_y,
                x1 + pad + (x2 - x1 - 2 * pad) * (0.9 - 0.3 * k),
                line_y + max(1, h // 16),
            ),
            fill=s.theme.muted,
        )


DRAWERS = {
    "statusbar": _statusbar,
    "navbar": _navbar,
    "tabbar": _tabbar,
    "button": _button,
    "textfield": _textfield,
    "toggle": _toggle,
    "checkbox": _checkbox,
    "slider": _slider,
    "icon": _icon,
    "text": _text,
    "listitem": _listitem,
    "card": _card,
}
