"""Grounding metrics: accuracy at an IoU threshold (Acc@IoU0.5) and mean IoU.

Both metrics take the same inputs, one predicted box per sample as a ``[N, 4]`` xyxy pixel
tensor in which a row holding any NaN (or other non-finite value) is a miss, scored IoU 0.
:func:`first_boxes` turns decoded answers (``BoxCodec.decode`` output, one list per sample)
into that tensor: the first box of an answer is its prediction, and an answer with no
parseable box becomes a NaN row.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torchmetrics import Metric


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes_a[i]`` with ``boxes_b[i]`` for each row (xyxy, ``[N, 4] -> [N]``).

    Pairs with zero union (two degenerate boxes) score 0 rather than NaN. A box with
    ``x2 < x1`` or ``y2 < y1`` has zero area.
    """
    if boxes_a.ndim != 2 or boxes_a.shape[-1] != 4 or boxes_a.shape != boxes_b.shape:
        raise ValueError(
            f"box_iou: expected two [N, 4] tensors of the same shape, got "
            f"{tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}"
        )
    top_left = torch.maximum(boxes_a[:, :2], boxes_b[:, :2])
    bottom_right = torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clamp(min=0).prod(dim=-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clamp(min=0).prod(dim=-1)
    union = area_a + area_b - intersection
    # Where the union is 0 the intersection is 0 too, so dividing by 1 there gives IoU 0.
    return intersection / torch.where(union > 0, union, torch.ones_like(union))


def first_boxes(answers: Sequence[Sequence[Sequence[float]]]) -> torch.Tensor:
    """The first box of each decoded answer as a ``[N, 4]`` float64 tensor; NaN rows for misses."""
    rows = []
    for index, boxes in enumerate(answers):
        if len(boxes) and len(boxes[0]) != 4:
            raise ValueError(
                f"first_boxes: answer {index} has a box with {len(boxes[0])} values, expected 4"
            )
        rows.append(list(boxes[0]) if len(boxes) else [float("nan")] * 4)
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 4)


class _MatchedBoxMetric(Metric):
    """Mean of a per-sample score of predicted vs. ground-truth box; sums reduce across ranks."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``preds`` and ``targets`` are ``[N, 4]`` xyxy pixel boxes.

        A ``preds`` row with a non-finite value is a miss (IoU 0). ``targets`` must be finite.
        """
        scores = self.scores(preds, targets)
        self.score_sum += scores.sum()
        self.total += scores.numel()

    def scores(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's score, ``[N]`` float64, without updating (inputs as in ``update``)."""
        name = type(self).__name__
        for label, tensor in (("preds", preds), ("targets", targets)):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"{name}.update: {label} must be a [N, 4] tensor, got {type(tensor).__name__}"
                    " (first_boxes() converts decoded answers)"
                )
        if preds.ndim != 2 or preds.shape[-1] != 4 or preds.shape != targets.shape:
            raise ValueError(
                f"{name}.update: preds and targets must both be [N, 4], got "
                f"{tuple(preds.shape)} and {tuple(targets.shape)}"
            )
        if not torch.isfinite(targets).all():
            raise ValueError(f"{name}.update: targets contain non-finite values")
        preds = preds.to(device=self.device, dtype=torch.float64)
        targets = targets.to(device=self.device, dtype=torch.float64)
        hit = torch.isfinite(preds).all(dim=-1)
        ious = torch.where(hit, box_iou(preds.nan_to_num(), targets), 0.0)
        return self._score(ious)

    def compute(self) -> torch.Tensor:
        """The mean score over every sample seen (NaN before the first update)."""
        return (self.score_sum / self.total).float()

    @abstractmethod
    def _score(self, ious: torch.Tensor) -> torch.Tensor:
        """Per-sample score from the IoU of each prediction with its target."""


class GroundingAccuracy(_MatchedBoxMetric):
    """Share of samples whose predicted box has IoU >= ``iou_threshold`` with the ground truth.

    The grounding metric of RefCOCO/RefCOCO+/RefCOCOg and Flickr30k Entities (Acc@IoU0.5).
    """

    def __init__(self, iou_threshold: float = 0.5, **kwargs) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(
                f"GroundingAccuracy: iou_threshold must be in (0, 1], got {iou_threshold!r}"
            )
        super().__init__(**kwargs)
        self.iou_threshold = float(iou_threshold)

    def _score(self, ious: torch.Tensor) -> torch.Tensor:
        return (ious >= self.iou_threshold).to(ious.dtype)


class MeanIoU(_MatchedBoxMetric):
    """Mean IoU of predicted with ground-truth boxes, misses counting 0."""

    def _score(self, ious: torch.Tensor) -> torch.Tensor:
        return ious
