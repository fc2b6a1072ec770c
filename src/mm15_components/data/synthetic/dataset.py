"""A map-style dataset that renders synthetic samples on the fly, deterministic by seed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
from torch.utils.data import Dataset

from mm15_components.data.schema import Box, Sample
from mm15_components.data.synthetic import motion, shapes, text
from mm15_components.language.chat import ChatTemplate

SPLITS = {"train": 0, "val": 1, "test": 2}
TASKS = ("grounding", "referring", "find_all", "text")


class SeededDataset(Dataset):
    """``num_samples`` samples, each drawn from its own generator seeded by ``(seed, split,
    index)``, so any worker, rank or resumed run reads the same sample."""

    def __init__(self, num_samples: int, seed: int = 0, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
        self.num_samples = num_samples
        self.seed = seed
        self.split = split

    def __len__(self) -> int:
        return self.num_samples

    def generator(self, index: int, *key: int) -> np.random.Generator:
        """The generator of sample ``index``, seeded by ``(seed, split, *key, index)``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return np.random.default_rng([self.seed, SPLITS[self.split], *key, index])


def sampling_probabilities(
    weights: dict[str, float], known: Iterable[str], what: str
) -> tuple[list[str], np.ndarray]:
    """The names in ``weights`` and their probabilities (weights over their sum). ``what``
    names the things weighted in errors, e.g. ``"synthetic tasks"``."""
    unknown = set(weights) - set(known)
    if unknown or not weights:
        raise ValueError(f"unknown {what} {sorted(unknown)}; choose from {sorted(known)}")
    values = np.array(list(weights.values()), dtype=float)
    if (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"weights of {what} must be >= 0 with a positive sum, got {weights}")
    return list(weights), values / values.sum()


class SyntheticDataset(SeededDataset):
    """``num_samples`` samples of a task mixture; sample ``i`` of a split depends only on
    ``(seed, split, i)``, so any worker, rank or resumed run renders the same sample.

    Args:
        tasks: task name -> sampling weight: ``grounding`` (shape -> box), ``referring``
            (box in the question -> colour), ``find_all`` (kind -> every box) or ``text`` (OCR).
        encode_box: writes a pixel box and the image (height, width) as answer text.
        questions: grounding questions per image, one per shape up to this many (a longer
            conversation gives more box answers per encoded image).
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        tasks: dict[str, float],
        encode_box: Callable[[Box, tuple[int, int]], str],
        seed: int = 0,
        split: str = "train",
        questions: int = 1,
    ) -> None:
        if questions < 1:
            raise ValueError(f"questions must be at least 1, got {questions}")
        self.task_names, self.task_probs = sampling_probabilities(tasks, TASKS, "synthetic tasks")
        super().__init__(num_samples, seed, split)
        self.image_size = image_size
        self.encode_box = encode_box
        self.questions = questions

    def _draw_task(self, index: int) -> tuple[str, np.random.Generator]:
        """Sample ``index``'s task, and its generator with the task drawn."""
        rng = self.generator(index)
        return self.task_names[int(rng.choice(len(self.task_names), p=self.task_probs))], rng

    def __getitem__(self, index: int) -> Sample:
        task, rng = self._draw_task(index)
        if task == "text":
            sample = text.text_sample(rng, self.image_size)
        else:
            make = {
                "grounding": partial(shapes.grounding_sample, questions=self.questions),
                "referring": shapes.referring_sample,
                "find_all": shapes.find_all_sample,
            }[task]
            sample = make(rng, self.image_size, self.encode_box)
        sample.id = f"synthetic-{self.split}-{index}"
        return sample

    def drawn_shapes(self, index: int) -> list[shapes.Shape]:
        """The shapes in sample ``index``'s image, boxes in its pixels (none for the text
        task): every shape task draws them first from the sample's generator, so drawing them
        again from the same generator gives the image's shapes without rendering it."""
        task, rng = self._draw_task(index)
        return [] if task == "text" else shapes.sample_shapes(rng, self.image_size)

    def mean_target_box(self, limit: int = 2000) -> Box:
        """Mean target box of the first ``limit`` grounding samples, as fractions of the image:
        the best constant answer, a baseline a model must beat to show it looks at images."""
        boxes = [
            s.target_box
            for s in map(self.__getitem__, range(min(limit, len(self))))
            if s.target_box is not None
        ]
        if not boxes:
            raise ValueError("the dataset has no grounding samples")
        return tuple(float(v) for v in np.mean(boxes, axis=0) / self.image_size)


TILE_INDICATOR_WORDS = {"image", "row", "col", "overview", "n"}


def vocabulary() -> set[str]:
    """Every word the synthetic tasks (image and video), the default chat template and the
    tile position indicators write: one tokenizer for both, so an image-trained model reads
    video questions too."""
    template = ChatTemplate()
    roles = {p.strip(" :") for p in (template.user_prefix, template.assistant_prefix)}
    tasks = shapes.vocabulary() | text.vocabulary() | motion.vocabulary()
    return tasks | roles | TILE_INDICATOR_WORDS
