"""Look at how the splitter cuts one image: a text report of the layout and a tile sheet.

Backs ``mm15 inspect IMAGE``. The sheet shows exactly what the encoder receives (tiles
de-normalised back to uint8, black padding included), arranged as the grid with the
overview to the side, so a wrong grid, heavy padding or a squashed overview is visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mm15_components.data.images import load_image
from mm15_components.vision.anyres import AnyResSplitter, TileLayout

__all__ = ["describe_layout", "draw_tiles", "inspect_image"]

MAX_SHEET_WIDTH = 1600
MARGIN = 8
OVERVIEW_GAP = 3 * MARGIN  # extra space that sets the overview apart from the grid
BACKGROUND = (255, 255, 255)
LABEL_COLOR = (20, 20, 20)


def describe_layout(layout: TileLayout, tokens_per_image: int) -> str:
    """A short report of every number the splitter decided for one image."""
    if isinstance(tokens_per_image, bool) or not isinstance(tokens_per_image, int):
        raise TypeError(f"tokens_per_image must be an int, got {type(tokens_per_image).__name__}")
    if tokens_per_image < 1:
        raise ValueError(f"tokens_per_image must be >= 1, got {tokens_per_image}")
    height, width = layout.original_size
    resized_height, resized_width = layout.resized_size
    bottom, right = layout.padding
    scale = layout.scale
    overview = "none" if layout.overview == "none" else f"{layout.overview} the tiles"
    with_overview = "" if layout.overview == "none" else " + overview"
    lines = [
        ("original size", f"{width} x {height} px (width x height)"),
        ("grid", f"{layout.rows} rows x {layout.cols} cols of {layout.tile_size} px tiles"),
        ("scale", f"{float(scale):.6g} ({scale.numerator}/{scale.denominator})"),
        ("resized size", f"{resized_width} x {resized_height} px"),
        ("padding", f"bottom {bottom} px, right {right} px"),
        ("tiles", str(layout.num_tiles)),
        ("overview", overview),
        ("images", f"{layout.num_images} ({layout.num_tiles} tiles{with_overview})"),
        (
            "image tokens",
            f"{layout.num_tokens(tokens_per_image)} ({layout.num_images} x {tokens_per_image})",
        ),
    ]
    return "\n".join(f"{name:<14}{value}" for name, value in lines)


def draw_tiles(image: torch.Tensor | Image.Image, splitter: AnyResSplitter) -> Image.Image:
    """A contact sheet of the tiles `splitter` makes from `image`, in emission order.

    Tiles sit in their grid position, the overview to the right; each is labelled with its
    index in the output tensor and its 0-based (row, col), or "overview". Tiles are shown at
    full size unless the sheet would exceed 1600 px in width, then downscaled alike.
    """
    tiles, layout = splitter(image)
    return _contact_sheet(tiles, layout, splitter)


def inspect_image(
    path: str | Path,
    splitter: AnyResSplitter,
    tokens_per_image: int = 144,
    output: str | Path | None = None,
) -> str:
    """Split the image file at `path`, write its tile sheet and return the report.

    The sheet goes to `output`, by default ``<stem>_tiles.png`` in the current directory.
    """
    path = Path(path)
    try:
        image = load_image(path)  # as training reads it: turned upright, 8-bit RGB
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read image file {str(path)!r}: {error}") from error
    tiles, layout = splitter(image)
    report = describe_layout(layout, tokens_per_image)
    output = Path(f"{path.stem}_tiles.png") if output is None else Path(output)
    _contact_sheet(tiles, layout, splitter).save(output)
    return f"{'image':<14}{path}\n{report}\n{'tile sheet':<14}{output}"


def _contact_sheet(
    tiles: torch.Tensor, layout: TileLayout, splitter: AnyResSplitter
) -> Image.Image:
    has_overview = layout.overview != "none"
    columns = layout.cols + has_overview
    gap = OVERVIEW_GAP if has_overview else 0
    side = min(layout.tile_size, (MAX_SHEET_WIDTH - MARGIN - gap) // columns - MARGIN)
    font_size = max(10, min(24, side // 12))
    font = ImageFont.load_default(size=font_size)
    label_height = font_size + 6
    cell_height = label_height + side + MARGIN
    sheet = Image.new(
        "RGB",
        (MARGIN + columns * (side + MARGIN) + gap, MARGIN + layout.rows * cell_height),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for index, (position, pixels) in enumerate(
        zip(layout.positions(), _denormalize(tiles, splitter), strict=True)
    ):
        row, col = (0, layout.cols) if position is None else position
        left = MARGIN + col * (side + MARGIN) + (gap if position is None else 0)
        top = MARGIN + row * cell_height
        label = f"{index} overview" if position is None else f"{index} ({row}, {col})"
        draw.text((left, top), label, fill=LABEL_COLOR, font=font)
        tile = Image.fromarray(pixels)
        if side < layout.tile_size:
            tile = tile.resize((side, side), Image.Resampling.LANCZOS)
        sheet.paste(tile, (left, top + label_height))
    return sheet


def _denormalize(tiles: torch.Tensor, splitter: AnyResSplitter) -> np.ndarray:
    """[N, 3, r, r] normalised tiles -> [N, r, r, 3] uint8, undoing the splitter's mean/std."""
    mean = torch.tensor(splitter.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(splitter.std, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = (tiles.detach().float().cpu() * std + mean).mul_(255).round_().clamp_(0, 255)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
