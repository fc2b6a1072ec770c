"""Make a small data set in the layout your own data would have: image files, LLaVA-style
conversation files (``train.jsonl``, ``val.jsonl``) and a tokenizer.

    python examples/own_data/make_data.py own_data --samples 64
    mm15 fit --config recipes/models/tiny.yaml --config examples/own_data/data.yaml

Each image holds one coloured rectangle; the question asks where it is and the answer is its
box in Ferret's convention (``[x1, y1, x2, y2]`` on a 0..999 grid, ``BoxCodec``). With a
pretrained LLM, name its tokenizer in the recipe instead of building one.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from mm15_components.grounding import BoxCodec
from mm15_components.language.tokenizer import build_word_tokenizer

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}


def make_sample(index: int, out: Path, rng: random.Random, codec: BoxCodec) -> dict:
    """Draw one image and write the LLaVA-style record that asks about it."""
    width, height = rng.randint(48, 96), rng.randint(48, 96)
    colour = rng.choice(sorted(COLOURS))
    x1, y1 = rng.randint(0, width // 2), rng.randint(0, height // 2)
    x2, y2 = rng.randint(x1 + 8, width), rng.randint(y1 + 8, height)
    image = Image.new("RGB", (width, height), (235, 235, 225))
    ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), fill=COLOURS[colour])
    name = f"images/{index:04d}.png"
    image.save(out / name)
    answer = codec.encode((x1, y1, x2, y2), image_size=(height, width))
    return {
        "id": f"own-{index}",
        "image": name,
        "conversations": [
            {"from": "human", "value": f"<image>\nWhere is the {colour} box?"},
            {"from": "gpt", "value": answer},
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--samples", type=int, default=64, help="training samples")
    parser.add_argument("--val_samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rng, codec = random.Random(args.seed), BoxCodec()
    records = [make_sample(i, args.out, rng, codec) for i in range(args.samples + args.val_samples)]
    for split, rows in (("train", records[: args.samples]), ("val", records[args.samples :])):
        with (args.out / f"{split}.jsonl").open("w") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
    # a word-level tokenizer of the data's own words (every integer below 1000 is one token)
    words = {"Where", "is", "the", "box", *COLOURS}
    build_word_tokenizer(words).save_pretrained(args.out / "tokenizer")
    print(f"wrote {len(records)} samples, their images and a tokenizer to {args.out}")


if __name__ == "__main__":
    main()
