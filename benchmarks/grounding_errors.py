"""Where a trained grounding model's validation misses are.

Loads a checkpoint of a recipe, answers the recipe's validation grounding questions greedily
(as validation does) and sorts each answer by the number of shapes in its image:

- hit: IoU >= 0.5 with the shape asked about (what ``val/grounding_acc`` counts);
- other shape: IoU >= 0.5 with another shape of the image (the wrong one was picked);
- loose: IoU 0.1-0.5 with the shape asked about;
- near other: IoU 0.1-0.5 with another shape;
- nowhere: everything else, unparseable answers included.

Then it asks about every shape of each validation image with two or more shapes, one question
each, and counts the images where all the answers point at one shape (the shape an answer
points at: the one it overlaps most, IoU >= 0.1): a model that does so ignores the question.
Last it asks the referring question ("What colour is the shape at [..]?") about every shape of
every validation image and counts the answers naming its colour, another shape's, or neither.

    python benchmarks/grounding_errors.py CHECKPOINT [--config recipes/grounding.yaml]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

from mm15_components import MM15Module
from mm15_components.cli import build_from_config
from mm15_components.data import SyntheticDataModule
from mm15_components.data.collate import collate
from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Sample, Turn
from mm15_components.data.synthetic import shapes
from mm15_components.data.synthetic.dataset import SyntheticDataset
from mm15_components.metrics.grounding import box_iou

KINDS = ("hit", "other shape", "loose", "near other", "nowhere")


def drawn_samples(dataset: SyntheticDataset) -> list[tuple[Sample, list[shapes.Shape]]]:
    """Each sample of a synthetic dataset with the shapes drawn for it (none for other
    tasks)."""
    return [(dataset[index], dataset.drawn_shapes(index)) for index in range(len(dataset))]


def shape_ious(box: torch.Tensor, image_shapes: list[shapes.Shape]) -> torch.Tensor:
    """IoU of one predicted box with each shape of its image (0 for a missing box)."""
    boxes = torch.tensor([s.box for s in image_shapes], dtype=torch.float32)
    return box_iou(box.expand_as(boxes), boxes).nan_to_num(0.0)


def classify(iou_target: float, iou_others: list[float]) -> str:
    best_other = max(iou_others, default=0.0)
    if iou_target >= 0.5:
        return "hit"
    if best_other >= 0.5:
        return "other shape"
    if iou_target >= 0.1:
        return "loose"
    return "near other" if best_other >= 0.1 else "nowhere"


def pointed_at(box: torch.Tensor, image_shapes: list[shapes.Shape]) -> int | None:
    """Index of the shape a predicted box overlaps most (IoU >= 0.1), or None."""
    ious = shape_ious(box, image_shapes)
    return int(ious.argmax()) if float(ious.max()) >= 0.1 else None


def encoded_batches(data: SyntheticDataModule, samples: list[Sample]) -> Iterator[dict[str, Any]]:
    """Batches of ``samples`` encoded as validation encodes them, in order."""
    items = [data.val_set.encoder(sample) for sample in samples]
    for start in range(0, len(items), data.batch_size):
        yield collate(items[start : start + data.batch_size], data.tokenizer.pad_token_id)


def ask(question: str, answer: str, image: Image.Image) -> Sample:
    """A one-turn sample asking ``question`` about ``image``, as training asks it."""
    return Sample(turns=[question_turn(question), Turn("assistant", answer)], images=[image])


def ask_every_shape(
    module: MM15Module,
    data: SyntheticDataModule,
    images_and_shapes: list[tuple[Image.Image, list[shapes.Shape]]],
) -> Counter[str]:
    """Asks about every shape of each image, one question each (as validation asks); counts
    the answers pointing at the shape asked, at another, at none, and the images whose
    answers all point at one shape."""
    size = data.image_size
    samples, asked = [], []
    for number, (image, image_shapes) in enumerate(images_and_shapes):
        for index, shape in enumerate(image_shapes):
            question = shapes.QUESTION.format(colour=shape.colour, kind=shape.kind)
            samples.append(ask(question, data.codec.encode(shape.box, (size, size)), image))
            asked.append((number, index, image_shapes))
    boxes = [
        box
        for batch in encoded_batches(data, samples)
        for box in module.predict_boxes(batch, torch.ones(len(batch["ids"]), dtype=torch.bool))
    ]
    pointed: dict[int, list[int | None]] = {}
    counts: Counter[str] = Counter()
    for box, (number, index, image_shapes) in zip(boxes, asked, strict=True):
        shape = pointed_at(box, image_shapes)
        counts["none" if shape is None else "asked" if shape == index else "another"] += 1
        pointed.setdefault(number, []).append(shape)
    counts["images"] = len(pointed)
    counts["one shape for all"] = sum(
        len(set(p)) == 1 and p[0] is not None for p in pointed.values()
    )
    return counts


def ask_colour_of_every_shape(
    module: MM15Module,
    data: SyntheticDataModule,
    images_and_shapes: list[tuple[Image.Image, list[shapes.Shape]]],
) -> Counter[tuple[int, str]]:
    """Asks the referring question ("What colour is the shape at [..]?") about every shape of
    each image; counts, by shapes in the image, the answers naming its colour, the colour of
    another shape of the image, or anything else."""
    size = data.image_size
    samples, asked = [], []
    for image, image_shapes in images_and_shapes:
        for shape in image_shapes:
            box = data.codec.encode(shape.box, (size, size))
            samples.append(ask(shapes.REFERRING_QUESTION.format(box=box), shape.colour, image))
            asked.append((shape.colour, {s.colour for s in image_shapes}))
    answers = [
        answer
        for batch in encoded_batches(data, samples)
        for answer in module.generate(
            batch["prompt_ids"], batch["prompt_mask"], batch["pixel_values"]
        )
    ]
    counts: Counter[tuple[int, str]] = Counter()
    for answer, (colour, present) in zip(answers, asked, strict=True):
        said = answer.strip()
        outcome = "right" if said == colour else "another shape's" if said in present else "other"
        counts[len(present), outcome] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--config", default="recipes/grounding.yaml")
    args = parser.parse_args()
    module, data = build_from_config(args.config)
    module.load_state_dict(torch.load(args.checkpoint, map_location="cpu")["state_dict"])
    module.eval()
    data.setup("validate")
    samples = drawn_samples(data.val_samples)
    drawn = iter(found for _, found in samples)
    counts: Counter[tuple[int, str]] = Counter()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        for batch in data.val_dataloader():
            rows = torch.isfinite(batch["target_boxes"]).all(-1)
            batch_shapes = [next(drawn) for _ in rows]
            targets = batch["target_boxes"][rows]
            grounding = [s for s, row in zip(batch_shapes, rows.tolist(), strict=True) if row]
            for box, target, image_shapes in zip(
                module.predict_boxes(batch, rows), targets, grounding, strict=True
            ):
                ious = shape_ious(box, image_shapes)
                asked = torch.tensor([s.box for s in image_shapes]).eq(target).all(-1)
                label = classify(float(ious[asked].sum()), ious[~asked].tolist())
                counts[len(image_shapes), label] += 1
        images = [(sample.images[0], found) for sample, found in samples if found]
        every = ask_every_shape(module, data, [(i, f) for i, f in images if len(f) >= 2])
        colours = ask_colour_of_every_shape(module, data, images)
    shape_counts = sorted({n for n, _ in counts})
    print(f"{args.checkpoint}: validation grounding answers by shapes in the image")
    print(f"{'shapes':>6} {'answers':>7} " + " ".join(f"{k:>11}" for k in KINDS))
    for n in [*shape_counts, None]:
        row = [sum(counts[m, k] for m in shape_counts if n in (None, m)) for k in KINDS]
        print(f"{n or 'all':>6} {sum(row):>7} " + " ".join(f"{v:>11}" for v in row))
    print(
        f"every shape asked, {every['images']} images with 2+ shapes: answers on the shape "
        f"asked {every['asked']}, on another {every['another']}, on none "
        f"{every['none']}; images whose answers all point at one shape "
        f"{every['one shape for all']}"
    )
    print(f"the colour of every shape asked ({len(images)} images), by shapes in the image")
    outcomes = ("right", "another shape's", "other")
    print(f"{'shapes':>6} {'answers':>7} " + " ".join(f"{k:>15}" for k in outcomes))
    for n in sorted({n for n, _ in colours}):
        row = [colours[n, k] for k in outcomes]
        print(f"{n:>6} {sum(row):>7} " + " ".join(f"{v:>15}" for v in row))


if __name__ == "__main__":
    main()
