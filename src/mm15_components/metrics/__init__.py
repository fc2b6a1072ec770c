from mm15_components.metrics.answers import (
    ANLS,
    AnswerMetric,
    ExactMatch,
    RelaxedAccuracy,
    VQAAccuracy,
    choice_letter,
)
from mm15_components.metrics.grounding import GroundingAccuracy, MeanIoU, box_iou
from mm15_components.metrics.ui import ReferringAccuracy, TaperceptionF1
from mm15_components.metrics.validation import VALIDATION_METRICS, ValidationMetric
from mm15_components.metrics.vqa import normalize_vqa_answer

__all__ = [
    "ANLS",
    "AnswerMetric",
    "ExactMatch",
    "GroundingAccuracy",
    "MeanIoU",
    "ReferringAccuracy",
    "RelaxedAccuracy",
    "TaperceptionF1",
    "VALIDATION_METRICS",
    "VQAAccuracy",
    "ValidationMetric",
    "box_iou",
    "choice_letter",
    "normalize_vqa_answer",
]
