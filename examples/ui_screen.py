"""Render one synthetic phone screen at a device's native size, with every element's box
and class drawn on a copy: the pictures in docs/ui.md.

    python examples/ui_screen.py --seed 3 --output screen.png
    mm15 inspect screen.png --tile_size 672 --min_tiles 4 --max_tiles 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mm15_components.data.synthetic.screens import draw_screen, sample_screen
from mm15_components.grounding.draw import draw_boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1170, help="screen width in pixels")
    parser.add_argument("--output", default="screen.png")
    args = parser.parse_args()
    screen = sample_screen(np.random.default_rng(args.seed), args.width)
    image = draw_screen(screen)
    image.save(args.output)
    boxes = [e.box for e in screen.elements]
    labels = [f"{e.kind} {e.text}".strip() for e in screen.elements]
    boxed = Path(args.output).with_name(Path(args.output).stem + "_boxes.png")
    draw_boxes(image, boxes, labels).save(boxed)
    print(f"{screen.device} {screen.width}x{screen.height}: {len(boxes)} elements -> {boxed}")


if __name__ == "__main__":
    main()
