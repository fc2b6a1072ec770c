"""Boxes and points as text: the coordinate codec for referring and grounding.

Coordinates are written on a virtual ``bins x bins`` image (the Ferret convention, 1000 bins by
default), so the same answer means the same region whatever the image resolution. One
:class:`BoxCodec` owns every convention that training data and answer parsing must agree on:
the number of bins, the rounding, the axis order (x before y) and the coordinate frame (pixels
of the original image, given as ``(height, width)``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Literal

import torch

Box = tuple[float, float, float, float]
Point = tuple[float, float]

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?[0-9]+")
_TOKEN_RUN = re.compile(r"(?:<coord_[0-9]+>\s*)+")
_TOKEN = re.compile(r"<coord_[0-9]+>")


class BoxCodec:
    """Encode pixel boxes and points as text and parse them back out of model answers.

    Encoding follows Ferret: clip to the image, then ``value = int(pixel * bins / size)``
    clamped to ``0..bins-1``; x uses the width and y the height. Decoding maps a value to the
    centre of its bin, ``(value + 0.5) * size / bins``, which halves the worst round-trip error
    of the plain ``value * size / bins`` (at most half a bin instead of a whole one).

    Styles:
        ``"text"``: ``"[x1, y1, x2, y2]"`` and ``"[x, y]"``, plain digits any tokenizer reads.
        ``"tokens"``: ``"<coord_X1><coord_Y1><coord_X2><coord_Y2>"`` and
        ``"<coord_X><coord_Y>"``, one dedicated token per value (see
        :meth:`coordinate_tokens`). No brackets: a run of coordinate tokens delimits itself,
        which keeps a box at four tokens.

    Decoding never raises on a model answer; what cannot be parsed yields nothing.
    """

    def __init__(self, bins: int = 1000, style: Literal["text", "tokens"] = "text") -> None:
        if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 2:
            raise ValueError(f"BoxCodec: bins must be an integer >= 2, got {bins!r}")
        if style not in ("text", "tokens"):
            raise ValueError(f"BoxCodec: style must be 'text' or 'tokens', got {style!r}")
        self.bins = int(bins)
        self.style = style
        self._token_values = {f"<coord_{value}>": value for value in range(self.bins)}

    def __repr__(self) -> str:
        return f"BoxCodec(bins={self.bins}, style={self.style!r})"

    def coordinate_tokens(self) -> list[str]:
        """The tokens a tokenizer must add for this codec (none for the text style)."""
        return list(self._token_values) if self.style == "tokens" else []

    def encode(
        self, box_xyxy_pixels: Sequence[float] | torch.Tensor, image_size: Sequence[int]
    ) -> str:
        """Write one ``(x1, y1, x2, y2)`` pixel box; parts outside the image are clipped off."""
        height, width = _check_image_size(image_size)
        x1, y1, x2, y2 = _check_coordinates(box_xyxy_pixels, 4, "box")
        if x2 < x1 or y2 < y1:
            raise ValueError(
                f"BoxCodec.encode: box must satisfy x1 <= x2 and y1 <= y2, got {(x1, y1, x2, y2)}"
            )
        values = (
            self._to_bin(x1, width),
            self._to_bin(y1, height),
            self._to_bin(x2, width),
            self._to_bin(y2, height),
        )
        return self._write(values)

    def encode_point(
        self, point_xy_pixels: Sequence[float] | torch.Tensor, image_size: Sequence[int]
    ) -> str:
        """Write one ``(x, y)`` pixel point, clipped to the image."""
        height, width = _check_image_size(image_size)
        x, y = _check_coordinates(point_xy_pixels, 2, "point")
        return self._write((self._to_bin(x, width), self._to_bin(y, height)))

    def decode(self, text: str, image_size: Sequence[int]) -> list[Box]:
        """Every box in ``text``, in pixels, in order of appearance.

        Each box is ordered (``x1 <= x2``, ``y1 <= y2``) and lies inside the image. Values
        outside ``0..bins-1`` (negative, ``bins`` itself, huge) are clamped into it, as
        :meth:`encode` clamps. A group that is not exactly four integers is skipped.
        """
        height, width = _check_image_size(image_size)
        boxes = []
        for x1, y1, x2, y2 in self._read(text, 4):
            left, right = sorted((self._to_pixel(x1, width), self._to_pixel(x2, width)))
            top, bottom = sorted((self._to_pixel(y1, height), self._to_pixel(y2, height)))
            boxes.append((left, top, right, bottom))
        return boxes

    def decode_points(self, text: str, image_size: Sequence[int]) -> list[Point]:
        """Every point in ``text``, in pixels, in order of appearance (see :meth:`decode`)."""
        height, width = _check_image_size(image_size)
        return [
            (self._to_pixel(x, width), self._to_pixel(y, height)) for x, y in self._read(text, 2)
        ]

    def _to_bin(self, pixel: float, size: int) -> int:
        clipped = min(max(pixel, 0.0), float(size))
        return min(int(clipped * self.bins / size), self.bins - 1)

    def _to_pixel(self, value: int, size: int) -> float:
        return (value + 0.5) * size / self.bins

    def _write(self, values: Sequence[int]) -> str:
        if self.style == "text":
            return "[" + ", ".join(str(value) for value in values) + "]"
        return "".join(f"<coord_{value}>" for value in values)

    def _read(self, text: str, arity: int) -> list[tuple[int, ...]]:
        """Groups of ``arity`` bin values (clamped to ``0..bins-1``) found in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"BoxCodec: text to decode must be a str, got {type(text).__name__}")
        if self.style == "text":
            return self._read_brackets(text, arity)
        return self._read_token_runs(text, arity)

    def _read_brackets(self, text: str, arity: int) -> list[tuple[int, ...]]:
        # Innermost brackets only, so "[[1, 2, 3, 4]]" still yields its box.
        groups = []
        for match in _BRACKETED.finditer(text):
            parts = [part.strip() for part in match.group(1).split(",")]
            if len(parts) == arity and all(_INTEGER.fullmatch(part) for part in parts):
                groups.append(tuple(self._clamp_integer(part) for part in parts))
        return groups

    def _read_token_runs(self, text: str, arity: int) -> list[tuple[int, ...]]:
        # A run of adjacent tokens (whitespace allowed between them) holds whole groups;
        # a run of the wrong length or with a token outside the vocabulary is ambiguous.
        groups = []
        for run in _TOKEN_RUN.finditer(text):
            tokens = _TOKEN.findall(run.group(0))
            if len(tokens) % arity or any(token not in self._token_values for token in tokens):
                continue
            values = [self._token_values[token] for token in tokens]
            groups.extend(tuple(values[i : i + arity]) for i in range(0, len(values), arity))
        return groups

    def _clamp_integer(self, digits: str) -> int:
        if digits.startswith("-"):
            return 0
        significant = digits.lstrip("0") or "0"
        # Comparing lengths first keeps int() away from arbitrarily long digit strings.
        if len(significant) > len(str(self.bins)):
            return self.bins - 1
        return min(int(significant), self.bins - 1)


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(
            f"BoxCodec: image_size must be (height, width), got {image_size!r}"
        ) from None
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(
                f"BoxCodec: image {name} must be a positive integer, got {value!r} "
                f"in image_size={image_size!r}"
            )
    return int(height), int(width)


def _check_coordinates(
    values: Sequence[float] | torch.Tensor, count: int, what: str
) -> list[float]:
    if hasattr(values, "tolist"):  # torch tensors and numpy arrays
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != count:
        raise ValueError(f"BoxCodec: a {what} needs {count} coordinates, got {values!r}")
    if not all(
        isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ValueError(f"BoxCodec: {what} coordinates must be finite numbers, got {values!r}")
    return [float(v) for v in values]
