from mm15_components.data.benchmark_datamodule import BenchmarkDataModule
from mm15_components.data.conversation import ConversationDataModule
from mm15_components.data.datamodule import SyntheticDataModule
from mm15_components.data.encoding import Encoding
from mm15_components.data.loader import Loader
from mm15_components.data.mixture import Mixture, Source
from mm15_components.data.query import QueryDataModule
from mm15_components.data.schema import Sample, Turn
from mm15_components.data.ui import UIDataModule
from mm15_components.data.video_datamodule import VideoDataModule

__all__ = [
    "BenchmarkDataModule",
    "ConversationDataModule",
    "Encoding",
    "Loader",
    "Mixture",
    "QueryDataModule",
    "Sample",
    "Source",
    "SyntheticDataModule",
    "Turn",
    "UIDataModule",
    "VideoDataModule",
]
