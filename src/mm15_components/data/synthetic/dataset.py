"""A map-style dataset that renders synthetic samples on the fly, deterministic by seed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch.utils.data import Dataset

from mm15_components.data.schema import Box, Sample
from mm15_components.data.synthetic import motion, shapes, text
from mm15_components.language.chat import ChatTemplate

SPLITS = {"train": 0, "val": 1, "test": 2}
TASKS = ("grounding", "referring", "find_all", "text")


class SyntheticDataset(Dataset):
    """``num_samples`` samples of a task mixture; sample ``i`` of a split depends only on
    ``(seed, split, i)``, so any worker, rank or resumed run renders the same sample.

    Args:
        tasks: task name -> sampling weight: ``grounding`` (shape -> box), ``referring``
            (box in the question -> colour), ``find_all`` (kind -> every box) or ``text`` (OCR).
        encode_box: writes a pixel box and the image (height, width) as answer text.
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        tasks: dict[str, float],
        encode_box: Callable[[Box, tuple[int, int]], str],
        seed: int = 0,
        split: str = "train",
    ) -> None:
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f"unknown synthetic tasks {sorted(unknown)}; choose from {TASKS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
        weights = np.array(list(tasks.values()), dtype=float)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task weights must be >= 0 with a positive sum, got {tasks}")
        self.task_names = list(tasks)
        self.task_probs = weights / weights.sum()
        self.num_samples = num_samples
        self.image_size = image_size
        self.encode_box = encode_box
        self.seed = seed
        self.split = split

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        task = self.task_names[int(rng.choice(len(self.task_names), p=self.task_probs))]
        if task == "text":
            sample = text.text_sample(rng, self.image_size)
        else:
            make = {
                "grounding": shapes.grounding_sample,
                "referring": shapes.referring_sample,
                "find_all": shapes.find_all_sample,
            }[task]
            sample = make(rng, self.image_size, self.encode_box)
        sample.id = f"synthetic-{self.split}-{index}"
        return sample

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
