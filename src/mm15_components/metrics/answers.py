"""Metrics of generated text answers: ANLS, VQA accuracy, relaxed accuracy and exact match.

Each metric scores a prediction against the references of its question (the best reference
counts, except for VQA accuracy, which counts how many humans gave the answer) and reports
the mean over questions. States are sums, so the mean is exact under DDP and FSDP whatever
the number of questions per rank. ``update(preds, targets)`` takes one predicted string per
question and one list of reference strings per question; a prediction of ``None`` is a
question the model did not answer (e.g. its image could not be read): it scores 0 and
counts. ``scores`` gives the per-question scores without updating, and ``score`` one
question's, so the rules are usable without Lightning.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from mm15_components.metrics.vqa import normalize_vqa_answer


class AnswerMetric(Metric):
    """Mean over questions of a per-question score of a predicted answer against its
    references."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str | None], targets: Sequence[Sequence[str]]) -> None:
        """Add a batch: ``preds[i]`` answers the question whose references are ``targets[i]``."""
        scores = self.scores(preds, targets)
        self.score_sum += scores.sum().to(self.device)
        self.total += len(scores)

    def compute(self) -> torch.Tensor:
        """The mean score over every question seen (NaN before the first update)."""
        return (self.score_sum / self.total).float()

    def scores(self, preds: Sequence[str | None], targets: Sequence[Sequence[str]]) -> torch.Tensor:
        """Each question's score, ``[N]`` float64; raises on inputs of the wrong shape."""
        check_answers(type(self).__name__, preds, targets)
        values = [
            0.0 if pred is None else self.score(pred, refs)
            for pred, refs in zip(preds, targets, strict=True)
        ]
        return torch.tensor(values, dtype=torch.float64)

    @abstractmethod
    def score(self, pred: str, references: Sequence[str]) -> float:
        """The score of one predicted answer against its question's references."""


def check_answers(name: str, preds: Sequence[str | None], targets: Sequence[Sequence[str]]) -> None:
    """Raise, naming ``name`` and the offending index, unless ``preds`` is a list of strings
    (or None) and ``targets`` a list of the same length of non-empty lists of strings."""
    if isinstance(preds, str) or not isinstance(preds, Sequence):
        raise TypeError(f"{name}.update: preds must be a list of strings, got {type(preds)}")
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise TypeError(
            f"{name}.update: targets must be a list of reference lists, got {type(targets)}"
        )
    if len(preds) != len(targets):
        raise ValueError(
            f"{name}.update: {len(preds)} predictions but {len(targets)} reference lists"
        )
    for index, (pred, refs) in enumerate(zip(preds, targets, strict=True)):
        if pred is not None and not isinstance(pred, str):
            raise TypeError(f"{name}.update: preds[{index}] is {type(pred)}, not a string")
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(
                f"{name}.update: targets[{index}] must be a list of reference strings, got "
                f"{refs!r} (wrap a single answer in a list)"
            )
        if not refs or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(
                f"{name}.update: targets[{index}] must hold at least one string, got {refs!r}"
            )


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of code points)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


class ANLS(AnswerMetric):
    """Average normalised Levenshtein similarity (DocVQA, InfoVQA, ST-VQA).

    A question scores its best similarity ``1 - d / L`` over the references and 0 when that
    is below ``threshold``. ``d`` is the edit distance between the answer and the reference
    lower-cased with whitespace collapsed; ``L``, as in the official evaluation script, is the
    length of the longer of the two as written (upper-cased, so a character whose capital is
    two letters, such as ``ß``, counts two). The paper writes the cut as ``d / L < 0.5``,
    which differs from the script only when the similarity is exactly 0.5 (kept here).
    """

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"ANLS: threshold must be in [0, 1], got {threshold!r}")
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def score(self, pred: str, references: Sequence[str]) -> float:
        best = max(self.similarity(pred, ref) for ref in references)
        return best if best >= self.threshold else 0.0

    @staticmethod
    def similarity(pred: str, reference: str) -> float:
        """``1 - d / L`` of one answer and one reference (1 when both are empty)."""
        length = max(len(pred.upper()), len(reference.upper()))
        if length == 0:
            return 1.0
        return 1.0 - levenshtein(_squash(pred), _squash(reference)) / length


class VQAAccuracy(AnswerMetric):
    """The VQA accuracy of VQAv2 and TextVQA: ``min(#humans who gave the answer / 3, 1)``,
    averaged over the leave-one-out subsets of the (usually 10) human answers.

    Answers and references are normalised alike (:func:`~mm15_components.metrics.vqa.
    normalize_vqa_answer`: case, punctuation, articles, number words, contractions), as the
    TextVQA evaluator does. With 10 references an answer that 1, 2 or 3 humans gave scores
    0.3, 0.6 or 0.9, and 1 from 4 on. The rule assumes several references: with a single one
    every answer scores 0.
    """

    def score(self, pred: str, references: Sequence[str]) -> float:
        answer = normalize_vqa_answer(pred)
        same = [normalize_vqa_answer(ref) == answer for ref in references]
        matches = sum(same)
        # leaving reference i out leaves the matches among the others
        return sum(min(1.0, (matches - left_out) / 3) for left_out in same) / len(same)


def _number(text: str) -> float | None:
    """``text`` as a float (``"12%"`` is 0.12), or None when it is not a number."""
    try:
        return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None


class RelaxedAccuracy(AnswerMetric):
    """ChartQA's relaxed accuracy: a numeric answer is right within ``tolerance`` relative
    error of a numeric reference, any other answer must equal the reference ignoring case.

    As in the ChartQA and Pix2Struct evaluation, a number is what Python's ``float`` reads
    after surrounding whitespace is stripped, a trailing ``%`` divides it by 100, and a
    reference of 0 is compared as text. So ``"1,000"`` is text (it equals only ``"1,000"``)
    and ``"50%"`` is 0.5, not 50.
    """

    def __init__(self, tolerance: float = 0.05, **kwargs) -> None:
        if tolerance < 0:
            raise ValueError(f"RelaxedAccuracy: tolerance must be >= 0, got {tolerance!r}")
        super().__init__(**kwargs)
        self.tolerance = float(tolerance)

    def score(self, pred: str, references: Sequence[str]) -> float:
        return float(any(self.correct(pred, ref) for ref in references))

    def correct(self, pred: str, reference: str) -> bool:
        pred, reference = pred.strip(), reference.strip()
        pred_number, ref_number = _number(pred), _number(reference)
        if pred_number is not None and ref_number:
            return abs(pred_number - ref_number) / abs(ref_number) <= self.tolerance
        return pred.lower() == reference.lower()


CHOICE_REFERENCE = re.compile(r"\(?([A-Z])\)?\.?")
"""A reference that names an option of a multiple-choice question: ``B``, ``(B)`` or ``B.``."""
CHOICE_IN_PARENTHESES = re.compile(r"\(([A-Z])\)")
CHOICE_WORD = re.compile(r"\b([A-Z])\b")
"""A capital letter that stands alone: not part of a longer word (``B``, ``B.``, ``B)``)."""


def choice_letter(answer: str) -> str | None:
    """The option a multiple-choice answer names, as MMMU's parser reads it: the last letter
    in parentheses (``"(B)"``), else the last capital letter standing alone (``"B"``,
    ``"B."``, ``"The answer is B"``); None when there is none."""
    for pattern in (CHOICE_IN_PARENTHESES, CHOICE_WORD):
        found = pattern.findall(answer)
        if found:
            return found[-1]
    return None


def normalize_text(text: str) -> str:
    """Case-folded, whitespace collapsed, one trailing full stop dropped."""
    text = " ".join(text.casefold().split())
    return text[:-1].rstrip() if text.endswith(".") else text


class ExactMatch(AnswerMetric):
    """1 when the answer equals a reference after :func:`normalize_text` (case, whitespace,
    a trailing full stop), else 0.

    A reference that is an option letter (``B``, ``(B)``, ``B.``: MMMU, AI2D, ScienceQA) is
    compared with the letter the answer names (:func:`choice_letter`), so ``"(B) a cat"``
    and ``"The answer is B."`` both match ``B``. ``choices=False`` compares letters as text.
    """

    def __init__(self, choices: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choices = choices

    def score(self, pred: str, references: Sequence[str]) -> float:
        return float(any(self.matches(pred, ref) for ref in references))

    def matches(self, pred: str, reference: str) -> bool:
        letter = CHOICE_REFERENCE.fullmatch(reference.strip()) if self.choices else None
        if letter is not None:
            return choice_letter(pred) == letter.group(1)
        return normalize_text(pred) == normalize_text(reference)
