"""Metrics of Ferret-UI's mobile-UI tasks.

- Referring (widget classification, OCR, icon recognition at a box or point): the answer
  matches the reference after case and whitespace normalisation, :class:`ReferringAccuracy`.
- Grounding (find-text / icon / widget -> box): Acc@IoU0.5, ``metrics.GroundingAccuracy``.
- Taperception (is the element tappable? yes/no): F1 of the "yes" class,
  :class:`TaperceptionF1`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from mm15_components.metrics.answers import ExactMatch, check_answers


class ReferringAccuracy(ExactMatch):
    """Share of referring answers equal to a reference (case, whitespace and a trailing full
    stop ignored). Class names are compared as text: a one-letter class is not read as a
    multiple-choice option."""

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=False, **kwargs)


YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def yes_no(answer: str | None) -> bool | None:
    """True for an answer whose first yes/no word is "yes", False for "no", None for neither."""
    found = YES_NO.search(answer or "")
    return None if found is None else found.group(1).lower() == "yes"


class TaperceptionF1(Metric):
    """F1 of the positive ("yes", tappable) class over yes/no answers, Taperception's metric.

    An answer with neither word counts as the wrong answer: a false negative when the
    reference is "yes", a false positive when it is "no". References must be yes or no.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("true_pos", "false_pos", "false_neg"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _pairs(
        self, preds: Sequence[str | None], targets: Sequence[Sequence[str]]
    ) -> list[tuple[bool | None, bool]]:
        check_answers(type(self).__name__, preds, targets)
        pairs = []
        for index, (pred, references) in enumerate(zip(preds, targets, strict=True)):
            reference = " ".join(references[0].split()).rstrip(".").casefold()
            if reference not in ("yes", "no"):
                raise ValueError(
                    f"TaperceptionF1.update: reference {index} must be 'yes' or 'no', "
                    f"got {references!r}"
                )
            pairs.append((yes_no(pred), reference == "yes"))
        return pairs

    def scores(self, preds: Sequence[str | None], targets: Sequence[Sequence[str]]) -> torch.Tensor:
        """1 where the answer is right, else 0 (``[N]`` float64), without updating."""
        values = [float(pred is truth) for pred, truth in self._pairs(preds, targets)]
        return torch.tensor(values, dtype=torch.float64)

    def update(self, preds: Sequence[str | None], targets: Sequence[Sequence[str]]) -> None:
        """Add a batch: ``preds[i]`` answers the question whose reference is ``targets[i][0]``."""
        for pred, truth in self._pairs(preds, targets):
            if truth:
                self.true_pos += int(pred is True)
                self.false_neg += int(pred is not True)
            else:
                self.false_pos += int(pred is not False)

    def compute(self) -> torch.Tensor:
        """2 TP / (2 TP + FP + FN); 0 when there is no positive anywhere (nothing to find
        and nothing claimed has no F1: reported as 0, not NaN, so logs stay finite)."""
        denominator = 2 * self.true_pos + self.false_pos + self.false_neg
        if denominator == 0:
            return torch.tensor(0.0)
        return (2 * self.true_pos / denominator).float()
