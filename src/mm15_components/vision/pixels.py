"""Any decoded PIL picture as the 8-bit RGB the model sees, the same for every path.

- 16-bit and 32-bit integer and float greyscale (``I;16``, ``I``, ``F``) is scaled to 8 bits
  by the image's own range, its least value black and its greatest white (an image of one
  value is black).
- Transparency (an alpha channel, or a palette or colour key with a transparent entry) is
  composited on ``BACKGROUND``, white.
- Palette, CMYK and the other modes are converted by Pillow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BACKGROUND = (255, 255, 255)
"""What transparent pixels become: white."""
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` (decoded, any mode) as 8-bit RGB, as the module docstring says."""
    if image.mode in _HIGH_DEPTH:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        image = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if image.mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
