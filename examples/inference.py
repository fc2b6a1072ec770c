"""Ask a trained model questions about an image, and draw the boxes it answers with.

    python examples/inference.py runs/quickstart/checkpoints/last.ckpt \
        shapes.png "Where is the red circle?" "Where is the blue square?" --out answers

The model is built from the recipe it was trained with (``--config``, repeatable, as given to
``mm15 fit``), its weights are read from the checkpoint, and each question is asked as
``mm15 predict`` asks it. Answers are printed; ``--out`` gets one PNG per question with the
boxes drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from mm15_components.cli import build_from_config
from mm15_components.grounding.draw import draw_boxes


def answer(checkpoint: str, image: str, questions: list[str], configs: list[str]) -> list[dict]:
    """Each question's answer and the boxes read from it, in pixels of ``image``."""
    layers = [arg for config in configs[1:] for arg in ("--config", config)]
    module, data = build_from_config(
        configs[0],
        *layers,
        "--config=recipes/snippets/predict.yaml",  # asks questions about images
        f"--model.init_args.init_from={checkpoint}",  # the trained weights
        f"--data.images=[{image}]",
        f"--data.query={questions[0]}",
    )
    module.eval()
    results = []
    for question in questions:
        data.query = question
        data.setup("predict")
        for batch in data.predict_dataloader():
            with torch.no_grad():
                for result in module.predict_step(batch, 0):
                    results.append({"question": question, **result})
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a Lightning checkpoint of mm15 fit")
    parser.add_argument("image")
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--config", action="append", help="the training recipe(s)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the drawn PNGs")
    args = parser.parse_args(argv)
    configs = args.config or ["recipes/quickstart.yaml"]
    results = answer(args.checkpoint, args.image, args.questions, configs)
    image = Image.open(args.image).convert("RGB")
    for index, result in enumerate(results):
        print(f"{result['question']} -> {result['answer']!r}, boxes {result['boxes']}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            labels = [result["question"]] * len(result["boxes"])
            draw_boxes(image, result["boxes"], labels).save(args.out / f"answer_{index}.png")


if __name__ == "__main__":
    main()
