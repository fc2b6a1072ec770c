"""Reusable building blocks for MM1.5-style multimodal LLMs."""

from mm15_components.model import MM15Model
from mm15_components.module import MM15Module
from mm15_components.pretrained import Pretrained, load_pretrained

__all__ = ["MM15Model", "MM15Module", "Pretrained", "load_pretrained"]
