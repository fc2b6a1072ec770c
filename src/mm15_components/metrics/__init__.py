from mm15_components.metrics.grounding import GroundingAccuracy, MeanIoU, box_iou

__all__ = ["GroundingAccuracy", "MeanIoU", "box_iou"]
