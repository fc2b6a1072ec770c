"""One way to turn an image file into the RGB picture the model sees, for training,
validation, benchmarks, ``mm15 predict``, ``mm15 inspect`` and video frame folders.

- EXIF orientation is applied (the picture is turned as a viewer shows it).
- Every mode becomes 8-bit RGB by ``vision.pixels.to_rgb``, which ``AnyResSplitter`` uses
  for PIL input too: 16-bit and float greyscale scaled by the image's range, transparency
  composited on white, palette, CMYK and the rest converted by Pillow.
- An image of more than ``max_pixels`` pixels is refused (``ImageTooLarge``) from its header,
  before any pixel is decoded.

``image_size`` reads the size the loaded picture will have from the header alone (width and
height swapped for the EXIF orientations that turn it by 90 degrees), so token counts
(``data.lengths``) agree with the images the model gets. The orientation is read from what
Pillow parses when it opens a file (JPEG, TIFF and WebP carry it in their headers; PNG only
when its ``eXIf`` chunk comes before the pixels), never by decoding the pixels, and the loader
uses the same reading.
"""

from __future__ import annotations

import os
import warnings
from typing import BinaryIO

from PIL import ExifTags, Image, PngImagePlugin

from mm15_components.vision.pixels import to_rgb

MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""Default pixel limit: Pillow's (89.5 MP, 4 times MM1.5's largest 2016 x 2016 input).
Pillow itself refuses images over twice its limit whatever is asked here."""
_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
"""EXIF orientation -> the transposition that shows the picture upright."""

File = str | os.PathLike | BinaryIO


class ImageTooLarge(ValueError):
    """An image above the pixel limit."""


def load_image(file: File, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """The RGB picture in ``file`` (a path or a binary stream), decoded now (a truncated file
    fails here) as the module docstring says.

    Raises:
        ImageTooLarge: more than ``max_pixels`` pixels (None: no limit but Pillow's).
        OSError, ValueError, SyntaxError: from Pillow, for a file it cannot read.
    """
    with _open(file, max_pixels) as image:
        turn = orientation(image)
        image.load()
        rgb = to_rgb(image)
    for transpose in _TRANSPOSE.get(turn, ()):
        rgb = rgb.transpose(transpose)
    return rgb


def image_size(file: File, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """``(height, width)`` of the picture ``load_image`` gives, from the header alone.
    Raises like ``load_image`` for a header it cannot read or an image too large."""
    with _open(file, max_pixels) as image:
        width, height = image.size
        if orientation(image) in (5, 6, 7, 8):
            width, height = height, width
    return height, width


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8; 1 when absent or invalid) as far as the header says."""
    if isinstance(image, PngImagePlugin.PngImageFile):
        exif = Image.Exif()  # PngImageFile.getexif decodes the pixels to find a late chunk
        if "exif" in image.info:
            exif.load(image.info["exif"])
    else:
        exif = image.getexif()
    value = exif.get(ExifTags.Base.Orientation, 1)
    return value if value in range(1, 9) else 1


def _open(file: File, max_pixels: int | None) -> Image.Image:
    """The image opened (header only), its size checked against ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"{width} x {height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    return image
