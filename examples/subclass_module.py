"""Subclass ``MM15Module`` to add a loss term, and train it from YAML.

``AnchoredModule`` adds an L2-SP penalty (Li et al., 2018): the squared distance of the
connector's weights from where they started, which keeps a fine-tuned connector near its
pre-trained state. The recipe names the class and its one new argument:

    PYTHONPATH=examples mm15 fit --config recipes/quickstart.yaml \
        --config examples/subclass_module.yaml

The new argument is typed and documented, so ``mm15 fit --help`` lists it; everything else
``MM15Module`` takes passes through ``**kwargs``.
"""

from __future__ import annotations

from typing import Any

import torch

from mm15_components import MM15Module
from mm15_components.data.schema import PackedBatch, TrainingBatch


class AnchoredModule(MM15Module):
    """``MM15Module`` whose training loss adds ``anchor_weight`` times the squared distance of
    the connector's weights from their values at construction (or after ``init_from``).

    Args:
        anchor_weight: weight of the penalty; 0 trains as ``MM15Module`` does.
        **kwargs: ``MM15Module``'s arguments.
    """

    def __init__(self, anchor_weight: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.anchor_weight = anchor_weight
        anchors = {n: p.detach().clone() for n, p in self.model.connector.named_parameters()}
        for name, value in anchors.items():  # buffers: moved with the module, not trained
            self.register_buffer(f"anchor_{name.replace('.', '_')}", value, persistent=False)

    def anchor_penalty(self) -> torch.Tensor:
        """Squared L2 distance of the connector's weights from their anchors."""
        return sum(
            (param - getattr(self, f"anchor_{name.replace('.', '_')}")).pow(2).sum()
            for name, param in self.model.connector.named_parameters()
        )

    def training_step(self, batch: TrainingBatch | PackedBatch, batch_idx: int) -> torch.Tensor:
        penalty = self.anchor_penalty()
        self.log("train/anchor_penalty", penalty)
        return super().training_step(batch, batch_idx) + self.anchor_weight * penalty
