"""A downstream package's own connector, used from a recipe by ``class_path`` alone."""

from my_connectors.normed import NormedMLPProjector

__all__ = ["NormedMLPProjector"]
