from mm15_components.connectors.c_abstractor import CAbstractor
from mm15_components.connectors.mlp import MLPProjector
from mm15_components.connectors.pooling import AvgPoolProjector

__all__ = ["AvgPoolProjector", "CAbstractor", "MLPProjector"]
