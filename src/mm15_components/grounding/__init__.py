from mm15_components.grounding.codec import BoxCodec
from mm15_components.grounding.decoding import BoxLogitsProcessor
from mm15_components.grounding.draw import draw_boxes
from mm15_components.grounding.head import CoordinateGroundingHead

__all__ = ["BoxCodec", "BoxLogitsProcessor", "CoordinateGroundingHead", "draw_boxes"]
