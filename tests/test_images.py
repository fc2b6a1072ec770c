"""The one image loader: every mode to 8-bit RGB against hand-computed pixels, EXIF
orientation (and the header size that token counts read agreeing with it), the pixel limit,
and the same picture in every path that reads an image file."""

import json

import numpy as np
import pytest
from PIL import Image

from mm15_components.data.formats import BadSampleError, JSONSource
from mm15_components.data.images import ImageTooLarge, image_size, load_image
from mm15_components.language import IMAGE_TOKEN


def pixels(image: Image.Image) -> list:
    assert image.mode == "RGB"
    return np.asarray(image).tolist()


def saved(tmp_path, image: Image.Image, name: str, **options) -> str:
    path = tmp_path / name
    image.save(path, **options)
    return str(path)


def test_sixteen_bit_grey_is_scaled_by_its_range(tmp_path):
    image = Image.fromarray(np.array([[1000, 2000, 3000]], dtype=np.uint16))
    path = saved(tmp_path, image, "grey16.png")
    assert Image.open(path).mode in ("I;16", "I")
    # 1000 -> 0, 3000 -> 255, 2000 -> 127.5 rounded to even: 128
    assert pixels(load_image(path)) == [[[0] * 3, [128] * 3, [255] * 3]]


@pytest.mark.parametrize(
    ("values", "mode"),
    [([[-1.0, 0.0, 1.0]], "F"), ([[0, 10, 20]], "I")],
)
def test_float_and_32_bit_grey_are_scaled_by_their_range(tmp_path, values, mode):
    dtype = np.float32 if mode == "F" else np.int32
    image = Image.fromarray(np.array(values, dtype=dtype), mode=mode)
    path = saved(tmp_path, image, "grey.tiff")
    assert Image.open(path).mode == mode
    assert pixels(load_image(path)) == [[[0] * 3, [128] * 3, [255] * 3]]


def test_flat_high_depth_image_is_black(tmp_path):
    image = Image.fromarray(np.full((1, 2), 500, dtype=np.uint16))
    assert pixels(load_image(saved(tmp_path, image, "flat.png"))) == [[[0] * 3] * 2]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 102]]], dtype=np.uint8)
    path = saved(tmp_path, Image.fromarray(rgba, "RGBA"), "rgba.png")
    # transparent black -> white; opaque red stays; black at alpha 0.4 -> 255 * 0.6 = 153
    assert pixels(load_image(path)) == [[[255] * 3, [255, 0, 0], [153] * 3]]
    la = Image.fromarray(np.array([[[0, 0], [50, 255]]], dtype=np.uint8), "LA")
    assert pixels(load_image(saved(tmp_path, la, "la.png"))) == [[[255] * 3, [50] * 3]]


def test_palette_with_a_transparent_entry(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([9, 9, 9, 0, 255, 0])
    image.putdata([0, 1])
    path = saved(tmp_path, image, "palette.png", transparency=0)
    assert pixels(load_image(path)) == [[[255] * 3, [0, 255, 0]]]


def test_cmyk(tmp_path):
    image = Image.new("CMYK", (2, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])
    path = saved(tmp_path, image, "cmyk.tiff")
    assert pixels(load_image(path)) == [[[255] * 3, [0, 255, 255]]]


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_is_applied_and_the_header_size_agrees(tmp_path, suffix):
    """Orientation 6: the stored picture is shown turned 90 degrees clockwise, so its left
    half (black) becomes the top half."""
    stored = np.full((8, 16, 3), 255, dtype=np.uint8)
    stored[:, :8] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    path = saved(tmp_path, Image.fromarray(stored), f"turned.{suffix}", exif=exif)
    image = load_image(path)
    assert image.size == (8, 16)
    assert image_size(path) == (16, 8)
    shown = np.asarray(image).astype(int)
    assert shown[:8].max() < 40 and shown[8:].min() > 215  # JPEG: within its loss


def test_pixel_limit_is_a_bad_sample_naming_the_file(tmp_path, monkeypatch):
    Image.new("RGB", (100, 60), "red").save(tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="6000 pixels, over the limit of 5000"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    with pytest.raises(ImageTooLarge):
        image_size(tmp_path / "big.png", max_pixels=5000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own refusal, wrapped
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=None)
    record = {"image": "big.png", "conversations": [
        {"from": "human", "value": f"{IMAGE_TOKEN}\nWhat?"}, {"from": "gpt", "value": "red"}
    ]}  # fmt: skip
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n")
    source = JSONSource(tmp_path / "data.jsonl", max_image_pixels=5000)
    for read in (source.__getitem__, source.outline):
        with pytest.raises(BadSampleError, match=r"data.jsonl:1: image .*big.png") as caught:
            read(0)
        assert caught.value.kind == "image_too_large"


def test_training_and_video_frames_read_the_same_picture(tmp_path):
    """A JSON source (training, validation, benchmarks) and a frame folder (video) see a
    16-bit image alike, scaled by its range."""
    from mm15_components.data.video import sample_frames

    grey = Image.fromarray(np.array([[0, 300], [600, 900]], dtype=np.uint16))
    grey.save(tmp_path / "grey.png")
    expected = [[[0] * 3, [85] * 3], [[170] * 3, [255] * 3]]
    record = {"image": "grey.png", "caption": "grey"}
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n")
    sample = JSONSource(tmp_path / "data.jsonl", format="caption")[0]
    assert pixels(sample.images[0]) == expected
    frames = tmp_path / "frames"
    frames.mkdir()
    grey.save(frames / "0001.png")
    assert sample_frames(frames, num_frames=1)[0].permute(1, 2, 0).tolist() == expected
