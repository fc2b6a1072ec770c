from mm15_components.vision.encoder import OpenCLIPVisionEncoder

__all__ = ["OpenCLIPVisionEncoder"]
