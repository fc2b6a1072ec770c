"""Dynamic image splitting ("AnyRes") as in MM1.5: one image -> a grid of tiles + an overview.

The splitter decides a grid once per image and records every derived number in a frozen
`TileLayout`; token counting, the model and the coordinate codec read that record instead of
redoing the float arithmetic. Tiles are cut with one resize, one pad and one reshape.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mm15_components.vision.pixels import to_rgb

__all__ = [
    "GRID_POLICIES",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "AnyResSplitter",
    "GridPolicy",
    "TileLayout",
    "candidate_grids",
    "fit_layout",
    "llava_grid",
    "mm15_grid",
    "tile_indicator_text",
    "to_rgb_tensor",
]

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

OverviewPosition = Literal["before", "after", "none"]
IndicatorStyle = Literal["none", "index", "seps"]
ImageInput = torch.Tensor | Image.Image

_OVERVIEW_POSITIONS = ("before", "after", "none")
_INTERPOLATIONS = ("bicubic", "bilinear")
# PIL modes read directly; every other mode goes through ``pixels.to_rgb``.
_DIRECT_MODES = ("RGB", "RGBA", "L", "LA")


@dataclass(frozen=True)
class TileLayout:
    """How one image is laid out as tiles; computed once, read by everything downstream.

    The image is scaled by `scale` (exact) to `resized_size`, padded at the bottom and right
    to the canvas (`rows * tile_size`, `cols * tile_size`), and cut into tiles in row-major
    order. Padding sits bottom/right so pixel boxes map to the canvas without an offset.
    """

    rows: int
    cols: int
    tile_size: int
    scale: Fraction
    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    overview: OverviewPosition

    def __post_init__(self) -> None:
        canvas_height, canvas_width = self.canvas_size
        height, width = self.resized_size
        if not (0 < height <= canvas_height and 0 < width <= canvas_width):
            raise ValueError(
                f"TileLayout: resized size {self.resized_size} must be positive and fit the "
                f"canvas {self.canvas_size}"
            )
        if self.overview not in _OVERVIEW_POSITIONS:
            raise ValueError(f"TileLayout: overview must be one of {_OVERVIEW_POSITIONS}")

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(height, width) of the padded canvas that the tiles cover."""
        return self.rows * self.tile_size, self.cols * self.tile_size

    @property
    def padding(self) -> tuple[int, int]:
        """(bottom, right) padding in canvas pixels."""
        canvas_height, canvas_width = self.canvas_size
        return canvas_height - self.resized_size[0], canvas_width - self.resized_size[1]

    @property
    def num_tiles(self) -> int:
        """Grid tiles, overview excluded."""
        return self.rows * self.cols

    @property
    def num_images(self) -> int:
        """Images handed to the encoder: the tiles plus the overview if there is one."""
        return self.num_tiles + (self.overview != "none")

    def num_tokens(self, tokens_per_image: int) -> int:
        """Image tokens this image costs when each tile/overview yields `tokens_per_image`."""
        return self.num_images * tokens_per_image

    def positions(self) -> list[tuple[int, int] | None]:
        """(row, col) of each emitted image in emission order; None marks the overview."""
        grid: list[tuple[int, int] | None] = [
            (row, col) for row in range(self.rows) for col in range(self.cols)
        ]
        if self.overview == "before":
            return [None, *grid]
        if self.overview == "after":
            return [*grid, None]
        return grid

    def box_to_canvas(self, box_xyxy: Sequence[float]) -> tuple[float, float, float, float]:
        """Map an [x1, y1, x2, y2] pixel box of the original image into canvas pixels.

        Per-axis ratios of the rounded sizes are used, so the box lands exactly on the
        resized content; no offset is needed because padding is bottom/right.
        """
        if len(box_xyxy) != 4:
            raise ValueError(f"box_to_canvas: expected 4 numbers [x1, y1, x2, y2], got {box_xyxy}")
        x_ratio = self.resized_size[1] / self.original_size[1]
        y_ratio = self.resized_size[0] / self.original_size[0]
        x1, y1, x2, y2 = box_xyxy
        return x1 * x_ratio, y1 * y_ratio, x2 * x_ratio, y2 * y_ratio


class GridPolicy(Protocol):
    """Chooses (rows, cols) for an image; must return a grid with min <= rows*cols <= max."""

    def __call__(
        self, height: int, width: int, tile_size: int, min_tiles: int, max_tiles: int
    ) -> tuple[int, int]: ...


@functools.lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """All (rows, cols) with min_tiles <= rows * cols <= max_tiles."""
    return tuple(
        (rows, cols)
        for rows in range(1, max_tiles + 1)
        for cols in range(1, max_tiles // rows + 1)
        if rows * cols >= min_tiles
    )


def mm15_grid(
    height: int, width: int, tile_size: int, min_tiles: int, max_tiles: int
) -> tuple[int, int]:
    """MM1.5 Eq. 1: least padding among grids that need no downscaling, else largest scale.

    Exact integer arithmetic: with area = h*w, s_g = fit / area where
    fit = r * min(rows*w, cols*h), and padding * area = rows*cols*r^2*area - fit^2.
    Ties go to fewer tiles, then fewer rows.
    """
    area = height * width

    def rank(grid: tuple[int, int]) -> tuple[bool, int, int, int]:
        rows, cols = grid
        fit = tile_size * min(rows * width, cols * height)
        covers = fit >= area
        if covers:
            badness = rows * cols * tile_size * tile_size * area - fit * fit
        else:
            badness = -fit
        return not covers, badness, rows * cols, rows

    return min(candidate_grids(min_tiles, max_tiles), key=rank)


def llava_grid(
    height: int, width: int, tile_size: int, min_tiles: int, max_tiles: int
) -> tuple[int, int]:
    """LLaVA-NeXT's rule: most effective pixels (capped at the original), then least waste.

    Effective resolution counts the aspect-preserved downscaled size (floored) and never
    rewards upscaling, so a small image ties between grids that the MM1.5 rule separates.
    Ties go to fewer tiles, then fewer rows.
    """
    area = height * width

    def rank(grid: tuple[int, int]) -> tuple[int, int, int, int]:
        rows, cols = grid
        canvas_height, canvas_width = rows * tile_size, cols * tile_size
        if canvas_width * height <= canvas_height * width:
            fitted = canvas_width * (height * canvas_width // width)
        else:
            fitted = canvas_height * (width * canvas_height // height)
        effective = min(fitted, area)
        return -effective, canvas_height * canvas_width - effective, rows * cols, rows

    return min(candidate_grids(min_tiles, max_tiles), key=rank)


GRID_POLICIES: dict[str, GridPolicy] = {"mm15": mm15_grid, "llava": llava_grid}


def fit_layout(
    height: int, width: int, rows: int, cols: int, tile_size: int, overview: OverviewPosition
) -> TileLayout:
    """The layout of an image scaled (aspect kept) to fit a rows x cols canvas of tiles."""
    scale = min(Fraction(rows * tile_size, height), Fraction(cols * tile_size, width))
    resized = (max(1, round(height * scale)), max(1, round(width * scale)))
    return TileLayout(
        rows=rows,
        cols=cols,
        tile_size=tile_size,
        scale=scale,
        original_size=(height, width),
        resized_size=resized,
        overview=overview,
    )


def tile_indicator_text(
    layout: TileLayout, image_index: int, style: IndicatorStyle = "index"
) -> list[str]:
    """Text placed before each emitted image of one layout, in emission order.

    "index": "<image k, row i, col j>" for tiles and "<image k, overview>" for the overview,
    counting from 1 (`image_index` is the 0-based position of the image in the sample);
    an unsplit image is just "<image k>". "seps": "" before the first tile, "," between
    columns, "<n>" between rows, ":" before the overview. "none": empty strings.
    """
    positions = layout.positions()
    if style == "none":
        return [""] * len(positions)
    if style == "index":
        image = f"image {image_index + 1}"
        if layout.num_images == 1:
            return [f"<{image}>"]
        return [
            f"<{image}, overview>"
            if pos is None
            else f"<{image}, row {pos[0] + 1}, col {pos[1] + 1}>"
            for pos in positions
        ]
    if style == "seps":
        return [
            ":" if pos is None else "" if pos == (0, 0) else "," if pos[1] else "<n>"
            for pos in positions
        ]
    raise ValueError(f"tile_indicator_text: style must be 'none', 'index' or 'seps', got {style!r}")


class AnyResSplitter:
    """Splits an image into a grid of normalised tiles plus an overview (MM1.5 "AnyRes").

    A plain class (no nn.Module) so it runs in DataLoader workers. uint8 input is resized in
    uint8 on CPU (the fast SIMD path, rounded like PIL); float input must lie in [0, 1] and is
    resized in float32 and clipped to [0, 1]. Padding is black (0 before normalisation).
    Images with alpha are composited on white; grayscale is repeated to 3 channels.
    """

    def __init__(
        self,
        tile_size: int = 378,
        min_tiles: int = 4,
        max_tiles: int = 9,
        overview: OverviewPosition = "after",
        max_images_to_split: int = 2,
        policy: str | GridPolicy = "mm15",
        mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
        std: tuple[float, float, float] = OPENAI_CLIP_STD,
        interpolation: Literal["bicubic", "bilinear"] = "bicubic",
    ) -> None:
        _check_int("tile_size", tile_size, minimum=1)
        _check_int("min_tiles", min_tiles, minimum=1)
        _check_int("max_tiles", max_tiles, minimum=min_tiles)
        _check_int("max_images_to_split", max_images_to_split, minimum=0)
        if overview not in _OVERVIEW_POSITIONS:
            raise ValueError(f"AnyResSplitter: overview must be one of {_OVERVIEW_POSITIONS}")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"AnyResSplitter: interpolation must be one of {_INTERPOLATIONS}")
        if isinstance(policy, str):
            if policy not in GRID_POLICIES:
                raise ValueError(
                    f"AnyResSplitter: unknown policy {policy!r}; known: {sorted(GRID_POLICIES)}"
                )
            policy = GRID_POLICIES[policy]
        elif not callable(policy):
            raise TypeError("AnyResSplitter: policy must be a policy name or a callable")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("AnyResSplitter: mean and std need 3 values each, std > 0")
        self.tile_size = tile_size
        self.min_tiles = min_tiles
        self.max_tiles = max_tiles
        self.overview: OverviewPosition = overview
        self.max_images_to_split = max_images_to_split
        self.policy: GridPolicy = policy
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    def plan(self, height: int, width: int) -> TileLayout:
        """Choose the grid for an image of this size and record the layout."""
        _check_int("height", height, minimum=1)
        _check_int("width", width, minimum=1)
        rows, cols = self.policy(height, width, self.tile_size, self.min_tiles, self.max_tiles)
        if not (rows >= 1 and cols >= 1 and self.min_tiles <= rows * cols <= self.max_tiles):
            raise ValueError(
                f"grid policy returned {rows}x{cols} for {height}x{width}; needs "
                f"{self.min_tiles} <= rows*cols <= {self.max_tiles}"
            )
        return fit_layout(height, width, rows, cols, self.tile_size, self.overview)

    def plan_single(self, height: int, width: int) -> TileLayout:
        """Layout of an unsplit image: one tile_size x tile_size image, no overview."""
        _check_int("height", height, minimum=1)
        _check_int("width", width, minimum=1)
        return fit_layout(height, width, 1, 1, self.tile_size, "none")

    def __call__(self, image: ImageInput) -> tuple[torch.Tensor, TileLayout]:
        """Tiles [num_images, 3, tile, tile] (float32, normalised) and their layout."""
        pixels = to_rgb_tensor(image)
        layout = self.plan(pixels.shape[-2], pixels.shape[-1])
        return self.render(pixels, layout), layout

    def split_sample(self, images: Sequence[ImageInput]) -> list[tuple[torch.Tensor, TileLayout]]:
        """Split each image of a sample if it has at most `max_images_to_split` images.

        Larger samples (many-image prompts, video frames) keep each image as one tile so the
        token budget stays bounded.
        """
        pixels = [to_rgb_tensor(image) for image in images]
        layouts = self.plan_sample([(p.shape[-2], p.shape[-1]) for p in pixels])
        return [(self.render(p, layout), layout) for p, layout in zip(pixels, layouts, strict=True)]

    def plan_sample(self, sizes: Sequence[tuple[int, int]]) -> list[TileLayout]:
        """The layouts `split_sample` gives the images of one sample, from their (height,
        width) alone: token counts read them without the pixels."""
        plan = self.plan if len(sizes) <= self.max_images_to_split else self.plan_single
        return [plan(height, width) for height, width in sizes]

    def render(self, pixels: torch.Tensor, layout: TileLayout) -> torch.Tensor:
        """Cut a [3, H, W] image (uint8, or float in [0, 1]) into the tiles of `layout`."""
        if pixels.shape != (3, *layout.original_size):
            raise ValueError(
                f"render: image shape {tuple(pixels.shape)} does not match the layout's "
                f"(3, {layout.original_size[0]}, {layout.original_size[1]})"
            )
        if pixels.dtype == torch.uint8 and pixels.device.type != "cpu":
            pixels = pixels.float().div_(255)  # the uint8 antialiased resize is CPU-only
        with _one_cpu_thread():
            return self._cut(pixels, layout)

    def _cut(self, pixels: torch.Tensor, layout: TileLayout) -> torch.Tensor:
        # The layout is left as given: PIL input is already channels-last (fastest resize),
        # and a channels-last copy of a CHW tensor costs more than it saves.
        batch = pixels.unsqueeze(0)
        r, rows, cols = layout.tile_size, layout.rows, layout.cols
        tiles = torch.empty(layout.num_images, 3, r, r, dtype=torch.float32, device=pixels.device)
        first_tile = 1 if layout.overview == "before" else 0
        bottom, right = layout.padding
        canvas = F.pad(self._resize(batch, layout.resized_size), (0, right, 0, bottom))[0]
        # Tiling is one strided copy that also converts to float: the canvas viewed as
        # [3, rows, r, cols, r] is written into the tiles viewed the same way.
        grid = tiles[first_tile : first_tile + layout.num_tiles]
        grid.view(rows, cols, 3, r, r).permute(2, 0, 3, 1, 4).copy_(
            canvas.unflatten(2, (cols, r)).unflatten(1, (rows, r))
        )
        if layout.overview != "none":
            overview_index = 0 if layout.overview == "before" else layout.num_tiles
            tiles[overview_index].copy_(self._resize(batch, (r, r))[0])
        return self._normalize_(tiles, value_range=255.0 if pixels.dtype == torch.uint8 else 1.0)

    def _resize(self, batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        resized = F.interpolate(batch, size=size, mode=self.interpolation, antialias=True)
        if resized.dtype != torch.uint8:
            resized.clamp_(0, 1)
        return resized

    def _normalize_(self, tiles: torch.Tensor, value_range: float) -> torch.Tensor:
        """Normalise tiles [N, 3, r, r] holding 0..value_range in place, in one pass."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=tiles.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=tiles.device).view(3, 1, 1)
        return torch.addcmul(-mean / std, tiles, 1.0 / (std * value_range), out=tiles)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run torch's CPU ops on the calling thread only, then restore the thread count.

    The antialiased resize is single-threaded anyway, and the pad, tiling copy and
    normalisation are memory-bound passes over a few MB, which a second thread barely
    speeds up; on a busy machine each parallel region instead waits for that thread to be
    scheduled, which costs more than the pass itself.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def to_rgb_tensor(image: ImageInput) -> torch.Tensor:
    """A [3, H, W] uint8 tensor, or float32 in [0, 1], from a CHW tensor or a PIL image."""
    if isinstance(image, Image.Image):
        pixels = _pil_to_tensor(image)
    elif isinstance(image, torch.Tensor):
        pixels = image
    else:
        raise TypeError(f"expected a CHW torch.Tensor or a PIL image, got {type(image).__name__}")
    return _to_rgb(_check_tensor(pixels))


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """CHW uint8 tensor of a PIL image in any mode: RGB, RGBA, L and LA as they are (alpha
    is composited by ``_to_rgb``), every other mode through ``pixels.to_rgb``, as the data
    loader converts it."""
    if image.width == 0 or image.height == 0:
        raise ValueError(
            f"image has zero size ({image.width}x{image.height}, PIL mode {image.mode})"
        )
    if image.mode not in _DIRECT_MODES:
        try:
            image = to_rgb(image)
        except ValueError as error:
            raise ValueError(f"cannot convert PIL mode {image.mode} to RGB: {error}") from error
    array = torch.from_numpy(np.array(image))
    return array.unsqueeze(0) if array.ndim == 2 else array.permute(2, 0, 1)


def _check_tensor(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.ndim != 3 or not 1 <= pixels.shape[0] <= 4:
        hint = " (looks like HWC; permute to CHW)" if pixels.ndim == 3 else ""
        raise ValueError(
            f"expected an image tensor [C, H, W] with C in 1..4, got shape "
            f"{tuple(pixels.shape)}{hint}"
        )
    if pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise ValueError(f"image has zero size (shape {tuple(pixels.shape)})")
    if pixels.dtype == torch.uint8:
        return pixels
    if not pixels.is_floating_point():
        raise TypeError(f"image tensor must be uint8 or floating point, got {pixels.dtype}")
    pixels = pixels.float()
    low, high = torch.aminmax(pixels)
    if not (low >= 0 and high <= 1):  # also catches NaN
        raise ValueError(
            f"float image values must lie in [0, 1], got {low.item():g}..{high.item():g} "
            "(pass uint8 for 0..255 data)"
        )
    return pixels


def _to_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """3 channels: gray is repeated; an alpha channel is composited on white."""
    channels = pixels.shape[0]
    if channels in (2, 4):
        if pixels.dtype == torch.uint8:
            pixels = pixels.float().div_(255)
        color, alpha = pixels[:-1], pixels[-1:]
        pixels = torch.addcmul(1 - alpha, color, alpha)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return pixels


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
