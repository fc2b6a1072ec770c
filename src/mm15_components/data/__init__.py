from mm15_components.data.datamodule import SyntheticDataModule
from mm15_components.data.schema import Sample, Turn

__all__ = ["Sample", "SyntheticDataModule", "Turn"]
