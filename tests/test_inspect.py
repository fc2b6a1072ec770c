import random

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from mm15_components.vision.anyres import AnyResSplitter
from mm15_components.vision.inspect import describe_layout, draw_tiles, inspect_image


def noise_image(height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.randint(0, 256, (height, width, 3), dtype=np.uint8))


def find_block(sheet: np.ndarray, block: np.ndarray) -> tuple[int, int]:
    """(top, left) of the one place in `sheet` where `block` starts; its corner must be unique."""
    corner = block[:4, :4]
    windows = sliding_window_view(sheet, corner.shape)[:, :, 0]
    tops, lefts = np.nonzero(np.all(windows == corner, axis=(2, 3, 4)))
    assert len(tops) == 1, f"corner found {len(tops)} times"
    return int(tops[0]), int(lefts[0])


def test_describe_layout_hand_computed():
    # 1000 x 600 (w x h), r = 378, grids with 4..9 tiles. MM1.5 Eq. 1, s = min(rows*r/h, cols*r/w):
    #   1xN, 4x1:           s <= 0.63          2x2, 3x2, 4x2: s = 2*378/1000 = 0.756
    #   2x3: s = min(1.26, 1.134) = 1.134, padding 756*1134 - 680.4*1134 = 85730.4
    #   2x4: s = min(1.26, 1.512) = 1.26,  padding 756*1512 - 756*1260   = 190512
    #   3x3: s = min(1.89, 1.134) = 1.134, padding 1134*1134 - 680.4*1134 = 514382.4
    # Covering grids (s >= 1): 2x3, 2x4, 3x3 -> least padding: 2x3 at s = 1134/1000 = 567/500.
    # Resized: 1134 x round(680.4) = 680; canvas 1134 x 756 -> padding bottom 76, right 0.
    # 6 tiles + overview = 7 images.
    tokens = random.randint(1, 600)
    layout = AnyResSplitter(tile_size=378, min_tiles=4, max_tiles=9).plan(600, 1000)
    assert describe_layout(layout, tokens).splitlines() == [
        "original size 1000 x 600 px (width x height)",
        "grid          2 rows x 3 cols of 378 px tiles",
        "scale         1.134 (567/500)",
        "resized size  1134 x 680 px",
        "padding       bottom 76 px, right 0 px",
        "tiles         6",
        "overview      after the tiles",
        "images        7 (6 tiles + overview)",
        f"image tokens  {7 * tokens} (7 x {tokens})",
    ]
    no_overview = AnyResSplitter(tile_size=378, overview="none").plan(600, 1000)
    report = describe_layout(no_overview, 144)
    assert "overview      none" in report and "images        6 (6 tiles)" in report
    assert "image tokens  864 (6 x 144)" in report


@pytest.mark.parametrize("tokens", [0, -3, 1.5, True])
def test_describe_layout_rejects_bad_token_count(tokens):
    layout = AnyResSplitter().plan(600, 1000)
    with pytest.raises((ValueError, TypeError), match="tokens_per_image"):
        describe_layout(layout, tokens)


@pytest.mark.parametrize("overview", ["after", "before"])
def test_sheet_shows_the_tiles_as_a_grid(overview):
    # 192 x 160 (w x h) with r = 64: only 3x3 covers the image, at scale 1, so each tile is
    # the original crop, and the bottom row carries 32 rows of black padding.
    image = noise_image(160, 192)
    splitter = AnyResSplitter(tile_size=64, min_tiles=4, max_tiles=9, overview=overview)
    tiles, layout = splitter(image)
    assert (layout.rows, layout.cols, layout.scale, layout.padding) == (3, 3, 1, (32, 0))
    sheet = np.asarray(draw_tiles(image, splitter))
    canvas = np.zeros((192, 192, 3), dtype=np.uint8)
    canvas[:160] = np.asarray(image)

    corners = {}
    for row in range(3):
        for col in range(3):
            expected = canvas[row * 64 : (row + 1) * 64, col * 64 : (col + 1) * 64]
            top, left = find_block(sheet, expected)
            np.testing.assert_array_equal(sheet[top : top + 64, left : left + 64], expected)
            corners[row, col] = top, left
    assert not sheet[corners[2, 0][0] + 32 : corners[2, 0][0] + 64, corners[2, 0][1]].any()

    overview_index = 0 if overview == "before" else 9
    mean, std = np.array(splitter.mean), np.array(splitter.std)
    overview_pixels = tiles[overview_index].permute(1, 2, 0).numpy() * std + mean
    overview_pixels = np.clip(np.round(overview_pixels * 255), 0, 255).astype(np.uint8)
    top, left = find_block(sheet, overview_pixels)
    np.testing.assert_array_equal(sheet[top : top + 64, left : left + 64], overview_pixels)

    for index in range(3):
        assert len({corners[index, col][0] for col in range(3)}) == 1  # rows share a top
        assert len({corners[row, index][1] for row in range(3)}) == 1  # columns share a left
    for row, col in corners:
        if col:
            assert corners[row, col][1] - corners[row, col - 1][1] > 64  # margin between tiles
        if row:
            assert corners[row, col][0] - corners[row - 1, col][0] > 64
    assert top == corners[0, 0][0] and left > corners[0, 2][1] + 64  # overview to the side


def test_wide_grid_is_downscaled_to_fit():
    image = noise_image(300, 3000)
    splitter = AnyResSplitter(tile_size=378, min_tiles=4, max_tiles=9)
    _, layout = splitter(image)
    assert (layout.rows, layout.cols) == (1, 9)
    sheet = draw_tiles(image, splitter)
    assert 1500 < sheet.width <= 1600  # 10 images share the width
    assert sheet.height < 378  # one row of downscaled tiles


def test_inspect_image_writes_sheet_and_report(tmp_path, monkeypatch):
    image = noise_image(random.randint(100, 400), random.randint(100, 400))
    source = tmp_path / "photo.png"
    image.save(source)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    splitter = AnyResSplitter(tile_size=48, min_tiles=2, max_tiles=6, overview="before")

    report = inspect_image(source, splitter, tokens_per_image=64)

    written = work / "photo_tiles.png"
    layout = splitter.plan(image.height, image.width)
    assert report.splitlines() == [
        f"image         {source}",
        *describe_layout(layout, 64).splitlines(),
        "tile sheet    photo_tiles.png",
    ]
    with Image.open(written) as sheet:
        np.testing.assert_array_equal(np.asarray(sheet), np.asarray(draw_tiles(image, splitter)))

    custom = tmp_path / "sheet.png"
    assert inspect_image(str(source), splitter, output=custom).endswith(f"tile sheet    {custom}")
    assert custom.is_file()


def test_unreadable_file_is_named(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    truncated = tmp_path / "truncated.png"
    noise_image(64, 64).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for path in (text, truncated):
        with pytest.raises(ValueError, match=f"cannot read image file.*{path.name}"):
            inspect_image(path, AnyResSplitter())
    with pytest.raises(ValueError, match="cannot read image file.*missing.png"):
        inspect_image(tmp_path / "missing.png", AnyResSplitter())
