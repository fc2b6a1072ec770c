from mm15_components.connectors.mlp import MLPProjector

__all__ = ["MLPProjector"]
