from mm15_components.vision.anyres import AnyResSplitter, TileLayout
from mm15_components.vision.encoder import OpenCLIPVisionEncoder

__all__ = ["AnyResSplitter", "OpenCLIPVisionEncoder", "TileLayout"]
