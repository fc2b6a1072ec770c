"""AnyRes splitter: grid choice, tile extraction, multi-image rule, indicators, bad input."""

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.image_processing_utils import select_best_resolution

from mm15_components.vision.anyres import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    AnyResSplitter,
    TileLayout,
    llava_grid,
    mm15_grid,
    tile_indicator_text,
)

MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)


# ---------------------------------------------------------------- independent references


def eq1_reference(h: int, w: int, r: int, lo: int, hi: int) -> tuple[int, int]:
    """MM1.5 Eq. 1 by enumeration with Fractions: filter, then sort the finalists."""
    grids = [(a, b) for a in range(1, hi + 1) for b in range(1, hi + 1) if lo <= a * b <= hi]
    scale = {g: min(Fraction(g[0] * r, h), Fraction(g[1] * r, w)) for g in grids}
    covering = [g for g in grids if scale[g] >= 1]
    if covering:
        padding = {g: g[0] * g[1] * r * r - (h * scale[g]) * (w * scale[g]) for g in covering}
        least = min(padding.values())
        finalists = [g for g in covering if padding[g] == least]
    else:
        largest = max(scale.values())
        finalists = [g for g in grids if scale[g] == largest]
    return sorted(finalists, key=lambda g: (g[0] * g[1], g[0]))[0]


def llava_reference(h: int, w: int, r: int, lo: int, hi: int) -> tuple[int, int]:
    """LLaVA-NeXT's rule by enumeration with Fractions (floor of the fitted size)."""
    grids = [(a, b) for a in range(1, hi + 1) for b in range(1, hi + 1) if lo <= a * b <= hi]
    best: dict[tuple[int, int], tuple[int, int]] = {}
    for a, b in grids:
        s = min(Fraction(a * r, h), Fraction(b * r, w))
        effective = min(int(w * s) * int(h * s), w * h)
        best[(a, b)] = (effective, a * b * r * r - effective)
    top = max(e for e, _ in best.values())
    finalists = [g for g, (e, _) in best.items() if e == top]
    least_waste = min(best[g][1] for g in finalists)
    finalists = [g for g in finalists if best[g][1] == least_waste]
    return sorted(finalists, key=lambda g: (g[0] * g[1], g[0]))[0]


def reassemble(tiles: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """Grid tiles [rows*cols, 3, r, r] back into the [3, rows*r, cols*r] canvas."""
    r = layout.tile_size
    grid = tiles.view(layout.rows, layout.cols, 3, r, r).permute(2, 0, 3, 1, 4)
    return grid.reshape(3, layout.rows * r, layout.cols * r)


def normalise(pixels_0_1: torch.Tensor) -> torch.Tensor:
    return (pixels_0_1 - MEAN) / STD


def random_image(h: int, w: int, channels: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (channels, h, w), dtype=torch.uint8)


def grid_tiles(tiles: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    start = 1 if layout.overview == "before" else 0
    return tiles[start : start + layout.num_tiles]


# ---------------------------------------------------------------- grid choice

sizes = st.integers(min_value=1, max_value=5000)
tile_sizes = st.sampled_from([14, 336, 378, 448, 672]) | st.integers(1, 1000)


@st.composite
def tile_ranges(draw: st.DrawFn) -> tuple[int, int]:
    lo = draw(st.integers(1, 6))
    return lo, draw(st.integers(lo, 12))


@settings(max_examples=1500, deadline=None)
@given(h=sizes, w=sizes, r=tile_sizes, bounds=tile_ranges())
def test_mm15_grid_matches_eq1_reference(h: int, w: int, r: int, bounds: tuple[int, int]) -> None:
    assert mm15_grid(h, w, r, *bounds) == eq1_reference(h, w, r, *bounds)


@settings(max_examples=1000, deadline=None)
@given(h=sizes, w=sizes, r=tile_sizes, bounds=tile_ranges())
def test_llava_grid_matches_reference(h: int, w: int, r: int, bounds: tuple[int, int]) -> None:
    assert llava_grid(h, w, r, *bounds) == llava_reference(h, w, r, *bounds)


@pytest.mark.parametrize(
    "h, w",
    [(1, 1), (2, 3), (3, 2), (1, 20), (20, 1), (100, 2000), (1, 100), (3000, 30), (2016, 2016),
     (1344, 2976), (2000, 2000), (378, 378), (756, 1134), (1134, 756)],
)  # fmt: skip
@pytest.mark.parametrize("r", [378, 672])
def test_grid_edge_sizes_match_references(h: int, w: int, r: int) -> None:
    assert mm15_grid(h, w, r, 4, 9) == eq1_reference(h, w, r, 4, 9)
    assert llava_grid(h, w, r, 4, 9) == llava_reference(h, w, r, 4, 9)


def test_hand_checked_grids() -> None:
    splitter = AnyResSplitter(tile_size=378)
    # A small square covers exactly with 2x2 and 3x3 (no padding): the tie goes to 2x2.
    square = splitter.plan(500, 500)
    assert (square.rows, square.cols, square.padding) == (2, 2, (0, 0))
    assert square.scale == Fraction(756, 500)
    # 1000 px: 2x2 would downscale; 3x3 covers with no padding.
    assert (splitter.plan(1000, 1000).rows, splitter.plan(1000, 1000).cols) == (3, 3)
    # 4 MP: nothing covers, the largest scale is 3x3 at 1134/2016 = 9/16.
    big = splitter.plan(2016, 2016)
    assert (big.rows, big.cols, big.scale, big.resized_size) == (
        3,
        3,
        Fraction(9, 16),
        (1134, 1134),
    )
    # The 672x6048 strip at tile 672 is exactly 1x9 at scale 1.
    strip = AnyResSplitter(tile_size=672).plan(672, 6048)
    assert (strip.rows, strip.cols, strip.scale, strip.padding) == (1, 9, 1, (0, 0))
    assert strip.num_images == 10


def test_policies_disagree_on_small_square_and_llava_matches_transformers() -> None:
    # Upscaling earns nothing under LLaVA's rule, so 2x2 and 1x4 tie on a small square
    # (same effective and wasted pixels); MM1.5 prefers the grid with no padding.
    assert mm15_grid(300, 300, 378, 4, 9) == (2, 2)
    assert llava_grid(300, 300, 378, 4, 9) == (1, 4)
    grids = sorted(
        ((a, b) for a in range(1, 10) for b in range(1, 10) if 4 <= a * b <= 9),
        key=lambda g: (g[0] * g[1], g[0]),
    )
    resolutions = [[a * 378, b * 378] for a, b in grids]
    for h, w in [(300, 300), (480, 640), (1080, 1920), (2200, 900), (378, 3402), (64, 640)]:
        rows, cols = llava_grid(h, w, 378, 4, 9)
        assert select_best_resolution((h, w), resolutions) == (rows * 378, cols * 378), (h, w)


def test_custom_policy_and_its_validation() -> None:
    splitter = AnyResSplitter(policy=lambda h, w, r, lo, hi: (lo, 1))
    layout = splitter.plan(100, 100)
    assert (layout.rows, layout.cols) == (4, 1)
    bad = AnyResSplitter(policy=lambda h, w, r, lo, hi: (hi, hi))
    with pytest.raises(ValueError, match="grid policy returned 9x9"):
        bad.plan(100, 100)


# ---------------------------------------------------------------- layout record


@settings(max_examples=200, deadline=None)
@given(h=sizes, w=sizes, per_image=st.integers(1, 1000))
def test_layout_invariants(h: int, w: int, per_image: int) -> None:
    layout = AnyResSplitter().plan(h, w)
    assert layout.num_images == layout.rows * layout.cols + 1
    assert layout.num_tokens(per_image) == layout.num_images * per_image
    canvas_h, canvas_w = layout.canvas_size
    assert layout.padding == (canvas_h - layout.resized_size[0], canvas_w - layout.resized_size[1])
    # The binding side fills the canvas; the other side is the rounded scaled size.
    assert canvas_h == layout.resized_size[0] or canvas_w == layout.resized_size[1]
    assert abs(layout.resized_size[0] - h * layout.scale) <= Fraction(1, 2) or h * layout.scale < 1
    assert abs(layout.resized_size[1] - w * layout.scale) <= Fraction(1, 2) or w * layout.scale < 1
    assert layout.box_to_canvas([0, 0, w, h]) == pytest.approx((0, 0, *layout.resized_size[::-1]))


def test_positions_follow_overview() -> None:
    splitter = AnyResSplitter(overview="before")
    assert splitter.plan(300, 500).positions()[:2] == [None, (0, 0)]
    none = AnyResSplitter(overview="none").plan(300, 500)
    assert None not in none.positions() and none.num_images == none.num_tiles


# ---------------------------------------------------------------- tile extraction


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("overview", ["before", "after", "none"])
def test_tiles_reassemble_to_one_resize(interpolation: str, overview: str) -> None:
    h, w = np.random.randint(40, 700, size=2).tolist()
    image = random_image(h, w)
    splitter = AnyResSplitter(tile_size=64, overview=overview, interpolation=interpolation)
    tiles, layout = splitter(image)
    assert tiles.shape == (layout.num_images, 3, 64, 64) and tiles.dtype == torch.float32

    canvas = reassemble(grid_tiles(tiles, layout), layout)
    rh, rw = layout.resized_size
    expected = F.interpolate(image[None], size=(rh, rw), mode=interpolation, antialias=True)[0]
    torch.testing.assert_close(canvas[:, :rh, :rw], normalise(expected / 255), atol=1e-5, rtol=0)
    # Padding is black before normalisation, bottom and right only.
    black = normalise(torch.zeros(3, 1, 1))
    assert torch.allclose(canvas[:, rh:, :], black.expand_as(canvas[:, rh:, :]), atol=1e-6)
    assert torch.allclose(canvas[:, :, rw:], black.expand_as(canvas[:, :, rw:]), atol=1e-6)

    overview_view = F.interpolate(image[None], size=(64, 64), mode=interpolation, antialias=True)
    expected_overview = normalise(overview_view[0] / 255)
    if overview == "none":
        assert layout.num_images == layout.num_tiles
    else:
        index = 0 if overview == "before" else -1
        torch.testing.assert_close(tiles[index], expected_overview, atol=1e-5, rtol=0)


def smooth_image(h: int, w: int) -> torch.Tensor:
    """Random but band-limited content, like a photo rather than per-pixel noise."""
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2)
    return (F.interpolate(coarse, size=(h, w), mode="bilinear")[0] * 255).round().byte()


def test_float_input_matches_float_resize() -> None:
    image = random_image(*np.random.randint(30, 400, size=2).tolist()).float() / 255
    splitter = AnyResSplitter(tile_size=48)
    tiles, layout = splitter(image)
    rh, rw = layout.resized_size
    expected = F.interpolate(image[None], size=(rh, rw), mode="bicubic", antialias=True)
    canvas = reassemble(grid_tiles(tiles, layout), layout)[:, :rh, :rw]
    torch.testing.assert_close(canvas, normalise(expected[0].clamp(0, 1)), atol=1e-5, rtol=0)
    half_precision, _ = splitter(image.half())
    assert (half_precision - tiles).abs().max() < 1 / 255 / min(OPENAI_CLIP_STD)


@pytest.mark.parametrize("interpolation, make_image", [
    ("bilinear", random_image), ("bicubic", smooth_image)
])  # fmt: skip
def test_uint8_and_float_inputs_agree(
    interpolation: str, make_image: Callable[[int, int], torch.Tensor]
) -> None:
    # uint8 is resized in uint8 (rounded, and clipped between the two passes like PIL), so
    # the paths agree to about one grey level; bicubic on per-pixel noise overshoots further.
    image = make_image(*np.random.randint(30, 400, size=2).tolist())
    splitter = AnyResSplitter(tile_size=48, interpolation=interpolation)
    tiles_u8, layout = splitter(image)
    tiles_f, layout_f = splitter(image.float() / 255)
    assert layout == layout_f
    assert (tiles_u8 - tiles_f).abs().max() < 1.5 / 255 / min(OPENAI_CLIP_STD)


def test_pil_and_tensor_inputs_agree() -> None:
    image = random_image(*np.random.randint(30, 400, size=2).tolist())
    splitter = AnyResSplitter(tile_size=32)
    from_tensor, layout = splitter(image)
    from_pil, pil_layout = splitter(Image.fromarray(image.permute(1, 2, 0).numpy()))
    assert layout == pil_layout
    torch.testing.assert_close(from_pil, from_tensor, atol=0, rtol=0)


def test_custom_mean_std() -> None:
    image = random_image(50, 70)
    tiles, layout = AnyResSplitter(tile_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)
    rh, rw = layout.resized_size
    expected = F.interpolate(image[None], size=(rh, rw), mode="bicubic", antialias=True)[0]
    canvas = reassemble(tiles[: layout.num_tiles], layout)[:, :rh, :rw]
    torch.testing.assert_close(canvas, expected / 127.5 - 1, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- multi-image rule


def test_split_sample_splits_only_small_samples() -> None:
    splitter = AnyResSplitter(tile_size=32, max_images_to_split=2)
    images = [random_image(*np.random.randint(20, 200, size=2).tolist()) for _ in range(3)]
    for tiles, layout in splitter.split_sample(images[:2]):
        assert 4 <= layout.num_tiles <= 9 and layout.overview == "after"
        assert tiles.shape[0] == layout.num_images == layout.num_tiles + 1
    assert splitter.split_sample([]) == []

    single = splitter.split_sample(images)
    assert len(single) == 3
    for (tiles, layout), image in zip(single, images, strict=True):
        assert (layout.rows, layout.cols, layout.overview, layout.num_images) == (1, 1, "none", 1)
        assert tiles.shape == (1, 3, 32, 32)
        assert layout.num_tokens(144) == 144
        rh, rw = layout.resized_size
        assert max(rh, rw) == 32  # aspect kept, padded bottom/right
        expected = F.interpolate(image[None], size=(rh, rw), mode="bicubic", antialias=True)[0]
        torch.testing.assert_close(
            tiles[0, :, :rh, :rw], normalise(expected / 255), atol=1e-5, rtol=0
        )


def test_max_images_to_split_zero_never_splits() -> None:
    (tiles, layout), = AnyResSplitter(tile_size=32, max_images_to_split=0).split_sample(
        [random_image(40, 90)]
    )  # fmt: skip
    assert layout.num_images == 1 and tiles.shape[0] == 1


# ---------------------------------------------------------------- indicators


def test_indicator_texts_for_2x3_layout() -> None:
    def layout(overview: str) -> TileLayout:
        return TileLayout(2, 3, 10, Fraction(1), (20, 30), (20, 30), overview)  # type: ignore[arg-type]

    assert tile_indicator_text(layout("after"), 0, "index") == [
        "<image 1, row 1, col 1>", "<image 1, row 1, col 2>", "<image 1, row 1, col 3>",
        "<image 1, row 2, col 1>", "<image 1, row 2, col 2>", "<image 1, row 2, col 3>",
        "<image 1, overview>",
    ]  # fmt: skip
    assert tile_indicator_text(layout("before"), 2, "index")[:2] == [
        "<image 3, overview>",
        "<image 3, row 1, col 1>",
    ]
    assert tile_indicator_text(layout("after"), 0, "seps") == ["", ",", ",", "<n>", ",", ",", ":"]
    assert tile_indicator_text(layout("before"), 0, "seps") == [":", "", ",", ",", "<n>", ",", ","]
    assert tile_indicator_text(layout("none"), 0, "seps") == ["", ",", ",", "<n>", ",", ","]
    assert tile_indicator_text(layout("after"), 0, "none") == [""] * 7
    unsplit = TileLayout(1, 1, 10, Fraction(1, 2), (20, 10), (10, 5), "none")
    assert tile_indicator_text(unsplit, 4, "index") == ["<image 5>"]
    with pytest.raises(ValueError, match="style"):
        tile_indicator_text(unsplit, 0, "commas")  # type: ignore[arg-type]


# ---------------------------------------------------------------- input kinds


def test_tiny_and_extreme_images() -> None:
    splitter = AnyResSplitter(tile_size=24)
    pixel = random_image(1, 1)
    tiles, layout = splitter(pixel)
    assert (layout.rows, layout.cols, layout.resized_size) == (2, 2, (48, 48))
    torch.testing.assert_close(tiles, normalise(pixel / 255).expand_as(tiles))
    for h, w in [(2, 3), (1, 100), (5, 500), (500, 5), (1, 5000)]:
        tiles, layout = splitter(random_image(h, w))
        assert tiles.shape == (layout.num_images, 3, 24, 24) and torch.isfinite(tiles).all()
        assert min(layout.resized_size) >= 1


def test_grayscale_is_repeated() -> None:
    gray = random_image(37, 53, channels=1)
    splitter = AnyResSplitter(tile_size=16)
    expected, _ = splitter(gray.expand(3, -1, -1))
    torch.testing.assert_close(splitter(gray)[0], expected, atol=0, rtol=0)
    pil_gray = Image.fromarray(gray[0].numpy(), mode="L")
    torch.testing.assert_close(splitter(pil_gray)[0], expected, atol=0, rtol=0)


def test_alpha_is_composited_on_white() -> None:
    splitter = AnyResSplitter(tile_size=16)
    color = random_image(30, 40)
    opaque = torch.cat([color, torch.full((1, 30, 40), 255, dtype=torch.uint8)])
    transparent = torch.cat([color, torch.zeros(1, 30, 40, dtype=torch.uint8)])
    torch.testing.assert_close(splitter(opaque)[0], splitter(color.float() / 255)[0])
    white, layout = splitter(transparent)
    assert torch.allclose(white[-1], normalise(torch.ones(3, 1, 1)).expand(3, 16, 16), atol=1e-5)
    alpha = torch.randint(0, 256, (1, 30, 40), dtype=torch.uint8)
    rgba = torch.cat([color, alpha])
    blended = (color * (alpha / 255) + 255 * (1 - alpha / 255)) / 255
    torch.testing.assert_close(splitter(rgba)[0], splitter(blended)[0], atol=1e-5, rtol=0)
    pil_rgba = Image.fromarray(rgba.permute(1, 2, 0).numpy(), mode="RGBA")
    torch.testing.assert_close(splitter(pil_rgba)[0], splitter(rgba)[0], atol=0, rtol=0)
    gray_alpha = torch.cat([color[:1], alpha])
    pil_la = Image.fromarray(gray_alpha.permute(1, 2, 0).numpy(), mode="LA")
    torch.testing.assert_close(
        splitter(pil_la)[0], splitter(torch.cat([color[:1].expand(3, -1, -1), alpha]))[0]
    )


def test_other_pil_modes_are_converted() -> None:
    splitter = AnyResSplitter(tile_size=16)
    rgb = Image.fromarray(random_image(25, 35).permute(1, 2, 0).numpy())
    for mode in ["P", "CMYK", "YCbCr", "1"]:
        converted = rgb.convert(mode)
        expected, _ = splitter(converted.convert("RGB"))
        torch.testing.assert_close(splitter(converted)[0], expected, atol=0, rtol=0)
    palette = rgb.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    rgba = np.array(palette.convert("RGBA"))
    assert set(np.unique(rgba[..., 3])) == {0, 255}  # palette transparency: all or nothing
    on_white = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3]).astype(np.uint8)
    expected, _ = splitter(Image.fromarray(on_white))
    torch.testing.assert_close(splitter(palette)[0], expected, atol=0, rtol=0)


def test_sixteen_bit_and_float_pil_modes_are_scaled_by_their_range_as_the_loader_does() -> None:
    splitter = AnyResSplitter(tile_size=16)
    grey = np.random.randint(0, 256, size=(21, 33)).astype(np.uint8)
    grey[0, 0], grey[0, 1] = 0, 255
    deep = (1000 + 200 * grey.astype(np.int64)).astype(np.uint16)  # range 1000..52000: 200 a level
    expected, _ = splitter(torch.from_numpy(grey)[None])
    torch.testing.assert_close(splitter(Image.fromarray(deep))[0], expected, atol=0, rtol=0)
    wide = Image.fromarray(deep.astype(np.int32))
    torch.testing.assert_close(splitter(wide)[0], expected, atol=0, rtol=0)
    unit = grey.astype(np.float32) / 255 * 3 - 1  # any float range
    torch.testing.assert_close(splitter(Image.fromarray(unit))[0], expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    "image, error, message",
    [
        (torch.zeros(3, 0, 5, dtype=torch.uint8), ValueError, "zero size"),
        (torch.zeros(3, 5, 0), ValueError, "zero size"),
        (Image.new("RGB", (0, 0)), ValueError, "zero size"),
        (torch.zeros(5, 5, dtype=torch.uint8), ValueError, r"\[C, H, W\]"),
        (torch.zeros(5, 8, 8, dtype=torch.uint8), ValueError, "C in 1..4"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, "HWC"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "int32"),
        (torch.zeros(3, 8, 8, dtype=torch.bool), TypeError, "bool"),
        (torch.full((3, 8, 8), 255.0), ValueError, r"\[0, 1\]"),
        (torch.full((3, 8, 8), -0.5), ValueError, r"\[0, 1\]"),
        (torch.full((3, 8, 8), float("nan")), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8, 3), dtype=np.uint8), TypeError, "ndarray"),
        (Image.new("LAB", (4, 4)).convert("RGB").convert("La"), ValueError, "mode La"),
    ],
)
def test_bad_images_are_refused_clearly(image: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        AnyResSplitter(tile_size=16)(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tile_size": 0}, ValueError, "tile_size"),
        ({"tile_size": 378.0}, TypeError, "tile_size"),
        ({"tile_size": True}, TypeError, "tile_size"),
        ({"min_tiles": 0}, ValueError, "min_tiles"),
        ({"min_tiles": 5, "max_tiles": 4}, ValueError, "max_tiles"),
        ({"max_images_to_split": -1}, ValueError, "max_images_to_split"),
        ({"overview": "middle"}, ValueError, "overview"),
        ({"policy": "nearest"}, ValueError, "unknown policy"),
        ({"policy": 3}, TypeError, "policy"),
        ({"std": (0.5, 0.0, 0.5)}, ValueError, "std"),
        ({"mean": (0.5, 0.5)}, ValueError, "mean"),
        ({"interpolation": "nearest"}, ValueError, "interpolation"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        AnyResSplitter(**kwargs)


def test_bad_plan_sizes_and_mismatched_render() -> None:
    splitter = AnyResSplitter()
    with pytest.raises(ValueError, match="height"):
        splitter.plan(0, 10)
    with pytest.raises(TypeError, match="width"):
        splitter.plan(10, 10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not match"):
        splitter.render(random_image(10, 10), splitter.plan(10, 11))


def test_render_restores_the_thread_count() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tiles, layout = AnyResSplitter(tile_size=64)(random_image(300, 500))
        assert torch.get_num_threads() == 2
        assert tiles.shape == (layout.num_images, 3, 64, 64)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_matches_cpu() -> None:
    image = random_image(300, 500)
    splitter = AnyResSplitter(tile_size=64)
    on_cpu, layout = splitter(image.float() / 255)
    on_gpu, gpu_layout = splitter(image.cuda())
    assert layout == gpu_layout and on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)
