"""LightningDataModules."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

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

if TYPE_CHECKING:
    from mm15_components.model import MM15Model

STANDALONE_GEOMETRY: dict[str, Any] = {
    "image_size": 64,
    "image_tokens": 16,
    "mean": CLIP_MEAN,
    "std": CLIP_STD,
}
"""What a data module uses for a value it was not given while no model is attached (a script
or a test reading samples); under a trainer the model's values replace them."""


class ModelGeometry:
    """The image geometry a data module must share with its model: input (tile) size, tokens
    per image, normalisation. Values given to the data module are kept and checked; the
    others are taken from the model by ``adopt_geometry``, which ``setup`` calls with the
    trainer's model.
    """

    image_size: int
    image_tokens: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    splitter: AnyResSplitter | None

    def _state_geometry(self, **stated: Any) -> None:
        """Record what the data was given; until a model is adopted, the rest is standalone."""
        self.stated_geometry = stated
        for key, value in stated.items():
            setattr(self, key, STANDALONE_GEOMETRY[key] if value is None else value)

    def adopt_geometry(self, model: MM15Model) -> None:
        """Take the model's image size, tokens per image, mean and std where the data was
        given none; raise, naming both keys and values, where a given one disagrees (the
        splitter's tile size, mean and std included)."""
        vision = model.vision
        wanted = {
            "image_size": (vision.image_size, "vision.image_size (the encoder's input size)"),
            "image_tokens": (model.tokens_per_image, "tokens_per_image (the connector's)"),
            "mean": (tuple(vision.mean), "vision.mean"),
            "std": (tuple(vision.std), "vision.std"),
        }
        for key, stated in self.stated_geometry.items():
            value, where = wanted[key]
            if stated is None:
                setattr(self, key, value)
            elif not _same(stated, value):
                raise ValueError(
                    f"data.init_args.{key}={_show(stated)} disagrees with the model's "
                    f"{where}={_show(value)}; make them equal, or leave the data's unset to "
                    "take the model's"
                )
        if self.splitter is not None:
            for key, name in (("tile_size", "image_size"), ("mean", "mean"), ("std", "std")):
                value, where = wanted[name]
                stated = getattr(self.splitter, key)
                if not _same(stated, value):
                    raise ValueError(
                        f"data.init_args.splitter.init_args.{key}={_show(stated)} disagrees "
                        f"with the model's {where}={_show(value)}; make them equal"
                    )

    def _adopt_trainer_geometry(self) -> None:
        """``adopt_geometry`` of the trainer's model, when there is one."""
        trainer = getattr(self, "trainer", None)
        model = getattr(getattr(trainer, "lightning_module", None), "model", None)
        if model is not None and hasattr(model, "tokens_per_image"):
            self.adopt_geometry(model)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))
    return a == b


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, (tuple, list)) else str(value)


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


class SyntheticDataModule(ModelGeometry, L.LightningDataModule):
    """Synthetic grounding (shapes -> boxes) and OCR (signs -> words) samples, rendered on
    the fly, deterministic by seed, with separate train and validation splits.

    Args:
        tokenizer: a pretrained tokenizer name or path; None builds the word-level tokenizer of
            the synthetic vocabulary locally (one token per word, per number below the codec's
            bins and per coordinate token of the codec's ``tokens`` style).
        tasks: task -> sampling weight (``grounding``, ``referring``, ``find_all``, ``text``).
        image_size: rendered image side in pixels, which must be the encoder's input size.
        image_tokens: LLM tokens per image (per tile when splitting); None takes the model's
            ``tokens_per_image`` (``adopt_geometry``).
        splitter: split each image into tiles plus an overview (MM1.5's AnyRes); its
            ``tile_size`` must be the encoder's input size. None: one square per image.
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
        mean / std: image normalisation; None takes the encoder's.
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
        image_tokens: int | None = None,
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
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        max_tokens: int | None = None,
        pack: int | None = None,
    ) -> None:
        super().__init__()
        self.splitter = splitter
        self._state_geometry(image_size=image_size, image_tokens=image_tokens, mean=mean, std=std)
        self.codec = codec or BoxCodec()
        self.tokenizer = data_tokenizer(tokenizer, self.codec, self.tokenizer_words)
        tasks = tasks or {"grounding": 0.75, "text": 0.25}
        make = partial(
            SyntheticDataset,
            image_size=self.image_size,
            tasks=tasks,
            encode_box=self.codec.encode,
            seed=seed,
        )
        self.train_samples = make(train_samples, split="train", questions=train_questions)
        self.val_samples = make(val_samples, split="val")
        self.tile_indicators = tile_indicators
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
        self._adopt_trainer_geometry()
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
