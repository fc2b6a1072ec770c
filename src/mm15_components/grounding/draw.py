"""Draw predicted boxes on an image, to look at what a grounding model answered."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(255, 0, 255), (0, 255, 255), (255, 128, 0), (0, 255, 0), (255, 255, 0)]
"""Outline colours, one per box in turn: saturated, so they stand out on photos and shapes."""

LABEL_TEXT = (0, 0, 0)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    min_side: int = 256,
) -> Image.Image:
    """A copy of ``image`` with each ``(x1, y1, x2, y2)`` pixel box outlined and labelled
    (reversed corners are swapped, as ``BoxCodec.decode`` does).

    Box ``i`` is outlined in ``COLOURS[i % len(COLOURS)]`` and ``labels[i]`` is written on a
    patch of that colour above its top-left corner (inside the box when there is no room
    above). Images whose shorter side is below ``min_side`` are first enlarged by the smallest
    integer factor that reaches it (nearest neighbour, so pixels stay sharp), and the boxes
    with them: a label stays readable on a 64 px image.
    """
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(labels)} labels")
    width, height = image.size
    scale = max(1, math.ceil(min_side / min(width, height)))
    canvas = image.convert("RGB").resize((width * scale, height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    line = max(2, min(canvas.size) // 128)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 20))
    for index, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"draw_boxes: box {index} needs 4 coordinates, got {box!r}")
        colour = COLOURS[index % len(COLOURS)]
        x1, x2 = sorted(round(v * scale) for v in box[0::2])
        y1, y2 = sorted(round(v * scale) for v in box[1::2])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        if labels is None or not labels[index]:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), labels[index], font=font)
        text_width, text_height = right - left + 4, bottom - top + 4
        x = max(0, min(x1, canvas.width - text_width))
        y = y1 - text_height if y1 >= text_height else y1 + line
        draw.rectangle((x, y, x + text_width - 1, y + text_height - 1), fill=colour)
        draw.text((x + 2 - left, y + 2 - top), labels[index], fill=LABEL_TEXT, font=font)
    return canvas
