"""Data mixtures declared in YAML: weighted sources in categories, categories in groups.

A source's probability is the product of three normalised weights: its group's among the
groups, its category's among the categories of that group, and its own among the sources of
that category. MM1.5's SFT mixture, for example::

    groups: {single_image: 0.8, multi_image: 0.1, text_only: 0.1}
    categories: {general: 1.0, text_rich: 3.3, refer_ground: 2.0, science: 0.1, math: 0.5,
                 code: 0.2, multi_image: 1.0, text_only: 1.0}

Draws are deterministic by ``(seed, split, index)``: sample ``i`` is the same in every
worker, rank and resumed run, and the realised category shares can be counted without
reading any data.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mm15_components.data.formats import BadSampleError, BadSamplePolicy, Format
from mm15_components.data.synthetic.dataset import SeededDataset


@dataclass
class Source:
    """One data source of a mixture.

    Args:
        category: the category it belongs to (its realised share is logged per category).
        group: the group of its category (default: one group for every source).
        weight: relative to the other sources of the same category.
        path: a ``.json``/``.jsonl`` file (``formats.JSONSource``), or the folder or URL
            (``s3://...``) of litdata chunks written by ``mm15 data optimize``
            (``stream.StreamingSource``); None uses the synthetic stand-in ``synthetic``.
        format: the records' schema (``conversation``, ``caption``, ``interleaved``, ``text``).
        image_root: folder a file's image paths are relative to (default: its folder); unset
            for chunks, which hold their images.
        synthetic: the stand-in kind when ``path`` is None (default: ``category``), one of
            ``mm15_components.data.synthetic.standins.KINDS``.
    """

    category: str
    group: str = "all"
    weight: float = 1.0
    path: str | None = None
    format: Format = "conversation"
    image_root: str | None = None
    synthetic: str | None = None


class StaleWeightsError(ValueError):
    """Weights for groups or categories that no source has: typically a recipe's weights
    left behind when its source list was replaced. ``for_key`` says what to pass."""

    def __init__(
        self, groups: list[str], categories: list[str], known_groups: list[str], known: list[str]
    ) -> None:
        self.groups, self.categories = groups, categories
        self.known_groups, self.known_categories = known_groups, known
        super().__init__(self.for_key("mixture"))

    def for_key(self, key: str) -> str:
        """The message for the mixture at config key ``key`` (e.g. ``data.init_args.train``)."""
        stale = [
            f"{kind} {names}"
            for kind, names in (("groups", self.groups), ("categories", self.categories))
            if names
        ]
        return (
            f"{key}: weights for {' and '.join(stale)}, which no source has (the sources have "
            f"groups {self.known_groups}, categories {self.known_categories}); when replacing "
            f"the sources, reset the weights of the old ones with --{key}.groups={{}} "
            f"--{key}.categories={{}}, or give weights for the new groups and categories"
        )


@dataclass
class Mixture:
    """Sources with group and category weights (missing weights are 1.0).

    Args:
        sources: the sources.
        groups: group -> weight among groups.
        categories: category -> weight among the categories of its group.
    """

    sources: list[Source]
    groups: dict[str, float] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)

    def probabilities(self) -> np.ndarray:
        """Each source's probability of being drawn (sums to 1)."""
        if not self.sources:
            raise ValueError("a mixture needs at least one source")
        weights = [*self.groups.values(), *self.categories.values()]
        if any(not w >= 0 for w in weights + [s.weight for s in self.sources]):
            raise ValueError("mixture weights must be >= 0")
        group_of = {s.category: s.group for s in self.sources}
        for source in self.sources:
            if group_of[source.category] != source.group:
                raise ValueError(f"category {source.category!r} is in two groups")
        groups = sorted(set(group_of.values()))
        stale_groups = sorted(set(self.groups) - set(groups))
        stale_categories = sorted(set(self.categories) - set(group_of))
        if stale_groups or stale_categories:
            raise StaleWeightsError(stale_groups, stale_categories, groups, sorted(group_of))
        group_weight = {g: self.groups.get(g, 1.0) for g in groups}
        category_weight = {c: self.categories.get(c, 1.0) for c in group_of}
        group_total = sum(group_weight.values())
        probabilities = []
        for source in self.sources:
            group = group_of[source.category]
            in_group = sum(w for c, w in category_weight.items() if group_of[c] == group)
            in_category = sum(s.weight for s in self.sources if s.category == source.category)
            p = group_weight[group] / group_total if group_total else 0.0
            p *= category_weight[source.category] / in_group if in_group else 0.0
            p *= source.weight / in_category if in_category else 0.0
            probabilities.append(p)
        total = sum(probabilities)
        if not total > 0:
            raise ValueError("the mixture's weights leave every source with probability 0")
        return np.array(probabilities) / total

    def category_shares(self) -> dict[str, float]:
        """The target share of each category."""
        shares: dict[str, float] = {}
        for source, p in zip(self.sources, self.probabilities(), strict=True):
            shares[source.category] = shares.get(source.category, 0.0) + float(p)
        return shares


class MixtureDataset(SeededDataset):
    """``num_samples`` items drawn from ``sources`` with ``probabilities``; item ``i`` depends
    only on ``(seed, split, i)``: a source, then a sample of it uniformly (with replacement).

    A source raising ``BadSampleError`` goes to ``policy``: under ``skip`` the next sample of
    the same source is tried, and the item records how many were skipped (``skipped``) beside
    its ``category``. The policy counts reads and bad samples per source (its ``name``, else
    its category) and stops when a source's bad share passes its limit.

    Args:
        sources: datasets of items (dicts), e.g. encoded samples.
        categories: each source's category.
        probabilities: each source's probability (``Mixture.probabilities``).
        num_samples: the dataset's length (an epoch).
        max_attempts: consecutive bad samples after which the source is declared unusable.
    """

    def __init__(
        self,
        sources: list[Dataset],
        categories: list[str],
        probabilities: np.ndarray,
        num_samples: int,
        seed: int = 0,
        split: str = "train",
        policy: BadSamplePolicy | None = None,
        max_attempts: int = 100,
    ) -> None:
        if not len(sources) == len(categories) == len(probabilities):
            raise ValueError("sources, categories and probabilities must have equal lengths")
        super().__init__(num_samples, seed, split)
        self.sources = sources
        self.categories = categories
        self.cumulative = np.cumsum(probabilities) / np.sum(probabilities)
        self.policy = policy or BadSamplePolicy("raise")
        self.max_attempts = max_attempts
        self._lengths: np.ndarray | None = None
        self._warned_length = False

    def lengths(self) -> np.ndarray:
        """Every item's token count, for batching by token budget; computed once.

        Sources with ``token_counts(indices)`` (``EncodedSource``: from the text and the
        images' sizes, no pixel decoded) count the samples drawn; an item whose sample they
        report bad (the policy replaces it by another) and the items of other sources are
        read in full.
        """
        if self._lengths is None:
            draws = np.array([self.draw(i) for i in range(len(self))], dtype=np.int64)
            lengths = np.full(len(self), -1, dtype=np.int64)
            for number, source in enumerate(self.sources):
                drawn = np.flatnonzero(draws[:, 0] == number)
                if len(drawn) and hasattr(source, "token_counts"):
                    lengths[drawn] = source.token_counts(draws[drawn, 1])
            for index in np.flatnonzero(lengths < 0):
                lengths[index] = len(self[int(index)]["input_ids"])
            self._lengths = lengths
        return self._lengths

    def draw(self, index: int) -> tuple[int, int]:
        """``(source, sample)`` of item ``index``."""
        rng = self.generator(index)
        source = min(
            int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.sources) - 1
        )
        return source, int(rng.integers(len(self.sources[source])))

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, sample = self.draw(index)
        dataset = self.sources[source]
        name = str(getattr(dataset, "name", self.categories[source]))
        for skipped in range(self.max_attempts):
            self.policy.read(name)
            try:
                item = dataset[(sample + skipped) % len(dataset)]
            except BadSampleError as error:
                self.policy.handle(error, name, len(dataset))
                continue
            if self._lengths is not None and len(item["input_ids"]) != self._lengths[index]:
                self._warn_length(index, len(item["input_ids"]))
            return {**item, "category": self.categories[source], "skipped": skipped}
        raise RuntimeError(
            f"{self.max_attempts} consecutive bad samples in the {self.categories[source]!r} "
            "source; is its image root right?"
        )

    def _warn_length(self, index: int, length: int) -> None:
        if not self._warned_length:
            warnings.warn(
                f"item {index} has {length} tokens, not the {self._lengths[index]} counted for "
                "the token budget (warned once), so its batch may pass max_tokens; the usual "
                "cause is a sample found bad only when read (an image whose header reads but "
                "whose pixels do not), replaced by the next one",
                stacklevel=3,
            )
            self._warned_length = True


def collate_with_categories(
    items: list[dict[str, Any]], collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]]
) -> dict[str, Any]:
    """``collate_fn``'s batch plus each ``MixtureDataset`` item's ``categories`` and the bad
    samples ``skipped`` to make them, for ``MixtureCounts``."""
    batch = collate_fn(items)
    batch["categories"] = [item["category"] for item in items]
    batch["skipped"] = sum(item["skipped"] for item in items)
    return batch


class MixtureCounts:
    """The running count of the training samples of each category and of the bad samples
    skipped to make them, on this rank. ``ResumableLoader`` adds each batch it hands out and
    keeps the counts in its state, beside its position, so a resumed run continues the counts
    exactly where the checkpoint's position is; each batch carries the counts so far
    (``data_counts``) for ``MixtureStatsLogger``."""

    def __init__(self) -> None:
        self.skipped = 0
        self.categories: Counter[str] = Counter()

    def add(self, batch: dict[str, Any]) -> None:
        """Count ``batch`` and attach the counts so far to it as ``data_counts``."""
        self.skipped += int(batch["skipped"])
        self.categories.update(batch["categories"])
        batch["data_counts"] = self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "categories": dict(self.categories)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state["skipped"])
        self.categories = Counter(state["categories"])
