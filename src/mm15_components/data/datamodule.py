"""The synthetic-shapes data module, and the encoded dataset the data modules share."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
from torch.utils.data import Dataset

from mm15_components.data.collate import SampleEncoder
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.lengths import token_counts
from mm15_components.data.loader import Loader, LoadsEncodedSets
from mm15_components.data.synthetic.dataset import SyntheticDataset


class EncodedDataset(Dataset):
    """Applies a ``SampleEncoder`` to a dataset of ``Sample`` objects (in the worker)."""

    def __init__(self, samples: Dataset, encoder: SampleEncoder) -> None:
        self.samples = samples
        self.encoder = encoder
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.encoder(self.samples[index])

    def lengths(self) -> np.ndarray:
        """Every sample's token count, for batching by token budget: computed once, exactly,
        from each rendered sample's text and image sizes (``lengths.token_counts``; no image
        is split or normalised)."""
        if self._lengths is None:
            self._lengths = token_counts(self.samples, self.encoder, np.arange(len(self)))
        return self._lengths


class SyntheticDataModule(ModelGeometry, LoadsEncodedSets, L.LightningDataModule):
    """Synthetic grounding (shapes -> boxes) and OCR (signs -> words) samples, rendered on
    the fly, deterministic by seed, with separate train and validation splits.

    Args:
        tasks: task -> sampling weight (``grounding``, ``referring``, ``find_all``, ``text``).
        train_samples / val_samples: split sizes.
        train_questions: grounding questions per training image (one per shape, up to this
            many turns): more box answers per encoded image. Validation asks one, so its
            numbers compare across settings.
        seed: fixes every sample and the order of every epoch.
        encoding: tokenizer, codec, image geometry and splitter (``Encoding``); images are
            rendered at ``image_size`` (default 64), which must be the encoder's input size.
        loader: batching (``Loader``).
    """

    def __init__(
        self,
        tasks: dict[str, float] | None = None,
        train_samples: int = 100_000,
        val_samples: int = 256,
        train_questions: int = 1,
        seed: int = 0,
        encoding: Encoding = Encoding(image_size=64),
        loader: Loader = Loader(),
    ) -> None:
        super().__init__()
        self.encoding, self.loader, self.seed = encoding, loader, seed
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer()
        make = partial(
            SyntheticDataset,
            image_size=self.image_size,
            tasks=tasks or {"grounding": 0.75, "text": 0.25},
            encode_box=self.codec.encode,
            seed=seed,
        )
        self.train_samples = make(train_samples, split="train", questions=train_questions)
        self.val_samples = make(val_samples, split="val")

    def setup(self, stage: str) -> None:
        self._adopt_trainer_geometry()
        self.train_set = EncodedDataset(self.train_samples, self.encoding.encoder(self.tokenizer))
        baseline = (
            self.train_samples.mean_target_box()
            if "grounding" in self.train_samples.task_names
            else None
        )
        self.val_set = EncodedDataset(
            self.val_samples, self.encoding.encoder(self.tokenizer, baseline_box=baseline)
        )
