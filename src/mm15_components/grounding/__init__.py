from mm15_components.grounding.codec import BoxCodec

__all__ = ["BoxCodec"]
