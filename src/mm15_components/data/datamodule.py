"""LightningDataModules."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from mm15_components.data.batching import TokenBudgetBatchSampler
from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.lengths import token_counts
from mm15_components.data.packing import collate_packed
from mm15_components.data.sampler import EpochBatchSampler, ResumableBatchSampler, ResumableLoader
from mm15_components.data.synthetic.dataset import SyntheticDataset, vocabulary
from mm15_components.grounding.codec import BoxCodec
from mm15_components.language.tokenizer import build_word_tokenizer, load_tokenizer
from mm15_components.vision.anyres import AnyResSplitter, IndicatorStyle
from mm15_components.vision.encoder import CLIP_MEAN, CLIP_STD


def data_tokenizer(
    name: str | None, codec: BoxCodec, extra_words: Iterable[str] = ()
) -> PreTrainedTokenizerBase:
    """The pretrained tokenizer ``name`` or, when None, the word tokenizer of the synthetic
    vocabulary and ``extra_words``; either way with ``codec``'s coordinate tokens."""
    if name:
        return load_tokenizer(name, codec.coordinate_tokens())
    words = vocabulary() | set(extra_words)
    return build_word_tokenizer(words, codec.bins, codec.coordinate_tokens())


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


class SyntheticDataModule(L.LightningDataModule):
    """Synthetic grounding (shapes -> boxes) and OCR (signs -> words) samples, rendered on
    the fly, deterministic by seed, with separate train and validation splits.

    Args:
        tokenizer: a pretrained tokenizer name or path; None builds the word-level tokenizer of
            the synthetic vocabulary locally (one token per word, per number below the codec's
            bins and per coordinate token of the codec's ``tokens`` style).
        tasks: task -> sampling weight (``grounding``, ``referring``, ``find_all``, ``text``).
        image_size: rendered image side in pixels (also the encoder input size).
        image_tokens: LLM tokens per image (per tile when splitting); must equal the model's
            ``tokens_per_image``.
        splitter: split each image into tiles plus an overview (MM1.5's AnyRes); its
            ``tile_size`` must equal ``image_size``. None: one ``image_size`` square per image.
        tile_indicators: text before each tile's tokens: ``none``, ``index`` or ``seps``.
        codec: writes the answer boxes (default: Ferret's text style, 1000 bins); the CLI hands
            it to the model, which reads answers with it.
        train_samples / val_samples: split sizes.
        train_questions: grounding questions per training image (one per shape, up to this
            many turns): more box answers per encoded image. Validation asks one, so its
            numbers compare across settings.
        batch_size / num_workers / seed: loader settings; ``seed`` fixes every sample and the
            order of every epoch.
        shuffle: shuffle training samples each epoch.
        max_tokens: batch by token budget instead of ``batch_size``: as many samples as fit
            this many padded tokens per batch (``TokenBudgetBatchSampler``; each sample's
            length is counted once, at setup, from its text and image sizes). None:
            ``batch_size`` samples.
        pack: pack each training batch's samples into rows of at most this many tokens, each
            sample attending only to itself (``data.packing``). None: one sample per row.
    """

    tokenizer_words: ClassVar[frozenset[str]] = frozenset()
    """Words the default tokenizer knows beyond the synthetic tasks' vocabulary."""

    def __init__(
        self,
        tokenizer: str | None = None,
        tasks: dict[str, float] | None = None,
        image_size: int = 64,
        image_tokens: int = 16,
        splitter: AnyResSplitter | None = None,
        tile_indicators: IndicatorStyle = "none",
        codec: BoxCodec | None = None,
        train_samples: int = 100_000,
        val_samples: int = 256,
        train_questions: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        max_tokens: int | None = None,
        pack: int | None = None,
    ) -> None:
        super().__init__()
        self.codec = codec or BoxCodec()
        self.tokenizer = data_tokenizer(tokenizer, self.codec, self.tokenizer_words)
        tasks = tasks or {"grounding": 0.75, "text": 0.25}
        make = partial(
            SyntheticDataset,
            image_size=image_size,
            tasks=tasks,
            encode_box=self.codec.encode,
            seed=seed,
        )
        self.train_samples = make(train_samples, split="train", questions=train_questions)
        self.val_samples = make(val_samples, split="val")
        self.image_size = image_size
        self.image_tokens = image_tokens
        self.splitter = splitter
        self.tile_indicators = tile_indicators
        self.mean, self.std = mean, std
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.max_tokens = max_tokens
        self.pack = pack

    def _encoder(self, baseline_box=None) -> SampleEncoder:
        return SampleEncoder(
            self.tokenizer,
            self.image_size,
            self.image_tokens,
            self.mean,
            self.std,
            splitter=self.splitter,
            tile_indicators=self.tile_indicators,
            baseline_box=baseline_box,
        )

    def setup(self, stage: str) -> None:
        self.train_set = EncodedDataset(self.train_samples, self._encoder())
        baseline = (
            self.train_samples.mean_target_box()
            if "grounding" in self.train_samples.task_names
            else None
        )
        self.val_set = EncodedDataset(self.val_samples, self._encoder(baseline))

    def _loader(
        self, dataset: EncodedDataset, shuffle: bool, pack: bool = False
    ) -> ResumableLoader:
        # Our own batch sampler, also under several ranks (Lightning's would always shuffle
        # training data); its position is saved in checkpoints, so resuming is exact.
        ranks = {"num_replicas": 1, "rank": 0}
        if self.trainer is not None and self.trainer.world_size > 1:
            ranks = self.trainer.strategy.distributed_sampler_kwargs
        batches: EpochBatchSampler
        if self.max_tokens is None:
            batches = ResumableBatchSampler(
                len(dataset), self.batch_size, shuffle, self.seed, **ranks
            )
        else:
            batches = TokenBudgetBatchSampler(
                dataset.lengths(), self.max_tokens, shuffle, self.seed, **ranks
            )
        collate_fn = partial(collate, pad_token_id=self.tokenizer.pad_token_id)
        if pack and self.pack is not None:
            collate_fn = partial(
                collate_packed, pad_token_id=self.tokenizer.pad_token_id, row_length=self.pack
            )
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
        )
        return ResumableLoader(loader)

    def train_dataloader(self) -> ResumableLoader:
        return self._loader(self.train_set, self.shuffle, pack=True)

    def val_dataloader(self) -> ResumableLoader:
        return self._loader(self.val_set, False)
