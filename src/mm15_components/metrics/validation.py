"""The metrics validation scores samples by, one line per name: a sample's ``metric`` field
names its entry, and its score is logged as ``val/<name>``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torchmetrics import Metric

from mm15_components.metrics.answers import ANLS, ExactMatch, RelaxedAccuracy, VQAAccuracy
from mm15_components.metrics.grounding import GroundingAccuracy, MeanIoU
from mm15_components.metrics.ui import ReferringAccuracy, TaperceptionF1


@dataclass(frozen=True)
class ValidationMetric:
    """How the samples of one metric name are scored.

    Args:
        build: makes the metric (each rank holds one of every entry, so syncing never waits
            on a rank that saw no such sample).
        answer: ``box``: the first box of the generated answer, read by the codec, against
            the sample's ``target_box``; ``text``: the answer text against its ``answers``.
        mean_iou: for box metrics, also log the mean IoU under this name.
    """

    build: Callable[[], Metric]
    answer: Literal["box", "text"]
    mean_iou: str | None = None

    @property
    def baseline(self) -> str:
        """Suffix of the baseline scored beside the model: a constant box (``baseline_box``)
        for box metrics, a constant answer (``baseline_answer``) for text metrics."""
        return "const" if self.answer == "box" else "majority"


VALIDATION_METRICS: dict[str, ValidationMetric] = {
    "grounding_acc": ValidationMetric(GroundingAccuracy, "box", mean_iou="mean_iou"),
    "ui_grounding_acc": ValidationMetric(GroundingAccuracy, "box"),
    "anls": ValidationMetric(ANLS, "text"),
    "vqa_acc": ValidationMetric(VQAAccuracy, "text"),
    "relaxed_acc": ValidationMetric(RelaxedAccuracy, "text"),
    "exact_match": ValidationMetric(ExactMatch, "text"),
    "widget_acc": ValidationMetric(ReferringAccuracy, "text"),
    "ui_referring_acc": ValidationMetric(ReferringAccuracy, "text"),
    "taperception_f1": ValidationMetric(TaperceptionF1, "text"),
    "video_acc": ValidationMetric(ExactMatch, "text"),
}


def validation_metric(name: str, where: str = "sample") -> ValidationMetric:
    """The entry of ``name``; raises naming ``where`` and the known names."""
    if name not in VALIDATION_METRICS:
        raise ValueError(
            f"{where}: unknown metric {name!r}; choose from {sorted(VALIDATION_METRICS)}"
        )
    return VALIDATION_METRICS[name]


def validation_scores() -> dict[str, Metric]:
    """One metric per name validation can log (without ``val/``): every entry, its baseline
    (``<name>_const`` or ``<name>_majority``) and its mean IoU where it has one."""
    scores: dict[str, Metric] = {}
    for name, spec in VALIDATION_METRICS.items():
        scores[name] = spec.build()
        scores[f"{name}_{spec.baseline}"] = spec.build()
        if spec.mean_iou is not None:
            scores[spec.mean_iou] = MeanIoU()
    return scores
