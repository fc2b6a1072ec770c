"""Training data from mixtures of sources: LLaVA-style files or synthetic stand-ins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from mm15_components.data.collate import SampleEncoder
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.formats import (
    DOCUMENT_FORMATS,
    BadSampleError,
    BadSamplePolicy,
    OnBadSample,
    is_record_file,
    open_source,
)
from mm15_components.data.images import MAX_PIXELS
from mm15_components.data.index import RecordIndex
from mm15_components.data.lengths import BAD, token_counts
from mm15_components.data.loader import Loader
from mm15_components.data.mixture import Mixture, MixtureCounts, MixtureDataset, StaleWeightsError
from mm15_components.data.sampler import ResumableLoader
from mm15_components.data.synthetic import standins
from mm15_components.language.chat import ChatTemplate, chat_template_for

DOCUMENT_TEMPLATE = ChatTemplate(user_prefix="", assistant_prefix="", separator="")
"""Pre-training documents: the text as it is, loss on all of it, one end token."""


class EncodedSource(Dataset):
    """Encodes the samples of one source; a sample over ``max_tokens`` is a bad sample.
    ``count_workers`` processes count tokens for ``token_counts`` (0: this one)."""

    def __init__(
        self,
        samples: Dataset,
        encoder: SampleEncoder,
        max_tokens: int | None = None,
        count_workers: int = 0,
    ) -> None:
        self.samples = samples
        self.encoder = encoder
        self.max_tokens = max_tokens
        self.count_workers = count_workers

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def name(self) -> str:
        """How messages name the source: its file, else its kind."""
        return str(getattr(self.samples, "path", type(self.samples).__name__))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item = self.encoder(sample)
        length = len(item["input_ids"])
        if self.max_tokens is not None and length > self.max_tokens:
            where = self.samples.where(index) if hasattr(self.samples, "where") else sample.id
            raise BadSampleError(
                "too_long", f"{where}: {length} tokens, over the limit of {self.max_tokens}"
            )
        return item

    def token_counts(self, indices: np.ndarray) -> np.ndarray:
        """The token count of each sample of ``indices`` without decoding images
        (``lengths.token_counts``); ``lengths.BAD`` for samples that are bad, too long ones
        included."""
        counts = token_counts(self.samples, self.encoder, indices, self.count_workers)
        if self.max_tokens is not None:
            counts[counts > self.max_tokens] = BAD
        return counts


class MixtureStatsLogger(L.Callback):
    """Logs the running count of skipped bad samples (``data/skipped``) and each category's
    realised share of the training samples so far (``data/share/<category>``), as seen on
    this rank: the ``data_counts`` each training batch of a mixture carries. The counts live
    in the loader (``MixtureCounts``), saved and restored with its position, so this callback
    holds no state; ``ConversationDataModule`` adds it to the trainer when it is missing."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not isinstance(batch, dict) or "data_counts" not in batch:
            return
        counts = batch["data_counts"]
        pl_module.log("data/skipped", float(counts["skipped"]))
        total = sum(counts["categories"].values())
        for category, count in sorted(counts["categories"].items()):
            pl_module.log(f"data/share/{category}", count / total)


class ConversationDataModule(ModelGeometry, L.LightningDataModule):
    """A mixture of sources per split (``Mixture``): LLaVA-style conversation, caption,
    interleaved or text files, or synthetic stand-ins for each MM1.5 data category.

    Conversations use the tokenizer's own chat template when it has one (else the plain
    ``ChatTemplate``; ``encoding.use_tokenizer_template``), with loss on assistant turns;
    documents (caption, interleaved, text) are read as they are, with loss on their text. Bad
    samples (``formats.BAD_KINDS``) raise, naming the file and line, or are skipped and
    counted. The training loader counts each category's samples and the skipped ones
    (``MixtureCounts``, logged as ``data/share/<category>`` and ``data/skipped``).

    Args:
        train: the training mixture.
        val: the validation mixture; None: the training one (stand-ins render the ``val``
            split, files give the training samples again: give real data its own ``val``).
        render_size: side of the stand-ins' rendered images (default: the encoding's
            ``image_size`` when given, else 64); larger than the tile size with a
            ``splitter``, to stand in for high-resolution documents.
        max_sample_tokens: samples with more tokens are bad samples (``too_long``), e.g. the
            model's sequence length; None: no limit.
        on_bad_sample: ``raise`` or ``skip``.
        max_bad_fraction: under ``skip``, the largest share of a source's samples that may be
            bad; past it (judged after 200 reads of the source, or all of a smaller one)
            the run stops naming the source, e.g. for a wrong ``image_root``.
        data_root: the folder relative source paths and image roots are under (default: the
            working directory).
        index_dir: the folder that caches the record index (and token counts) of each
            ``.json``/``.jsonl`` source; None: beside each file (see ``data.index``).
        max_image_pixels: images with more pixels are bad samples (``image_too_large``),
            refused from their header; None: no limit but Pillow's (``data.images``).
        train_samples / val_samples: items per epoch (each drawn from the mixture) and the
            size of each stand-in source.
        seed: fixes the mixture's draws, every stand-in sample and the order of every epoch.
        encoding: tokenizer, codec, image geometry and splitter (``Encoding``); the default
            tokenizer also knows the stand-ins' words.
        loader: batching (``Loader``).
    """

    def __init__(
        self,
        train: Mixture,
        val: Mixture | None = None,
        render_size: int | None = None,
        max_sample_tokens: int | None = None,
        on_bad_sample: OnBadSample = "skip",
        max_bad_fraction: float = 0.1,
        data_root: str | None = None,
        index_dir: str | None = None,
        max_image_pixels: int | None = MAX_PIXELS,
        train_samples: int = 100_000,
        val_samples: int = 256,
        seed: int = 0,
        encoding: Encoding = Encoding(),
        loader: Loader = Loader(),
    ) -> None:
        super().__init__()
        self.encoding, self.loader, self.seed = encoding, loader, seed
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer(standins.vocabulary())
        self.chat_template = (
            chat_template_for(self.tokenizer) if self.use_tokenizer_template else ChatTemplate()
        )
        self.render_size = render_size or self.image_size
        self.max_sample_tokens = max_sample_tokens
        self.policy = BadSamplePolicy(on_bad_sample, max_bad_fraction)
        self.data_root = data_root
        self.index_dir = index_dir
        self.max_image_pixels = max_image_pixels
        self.train_mixture, self.val_mixture = train, val or train
        for name, mixture in (("train", self.train_mixture), ("val", self.val_mixture)):
            try:
                target = mixture.category_shares()
            except StaleWeightsError as error:
                raise ValueError(error.for_key(f"data.init_args.{name}")) from None
            shares = ", ".join(f"{c} {p:.1%}" for c, p in target.items())
            rank_zero_info(f"{name} mixture target shares: {shares}")
        self.train_size, self.val_size = train_samples, val_samples

    def prepare_data(self) -> None:
        """Index each ``.json``/``.jsonl`` source once (Lightning runs this on one process per
        node before ``setup``; the other ranks then read the cached index)."""
        for mixture in (self.train_mixture, self.val_mixture):
            for source in mixture.sources:
                path = self._under_root(source.path)
                if path is not None and is_record_file(path):
                    RecordIndex.open(path, self.index_dir)

    def _sources(self, mixture: Mixture, size: int, split: str) -> list[tuple[Dataset, bool]]:
        """Each source's samples, and whether they are documents (no chat template)."""
        sources = []
        for source in mixture.sources:
            if source.path is None:
                kind = source.synthetic or source.category
                samples = standins.StandInDataset(
                    kind, size, self.render_size, self.codec.encode, self.seed, split
                )
                sources.append((samples, kind in standins.DOCUMENT_KINDS))
            else:
                image_root = self._under_root(source.image_root)
                samples = open_source(
                    self._under_root(source.path),
                    source.format,
                    image_root,
                    self.index_dir,
                    self.max_image_pixels,
                )
                sources.append((samples, source.format in DOCUMENT_FORMATS))
        return sources

    def _under_root(self, path: str | None) -> str | None:
        """``path`` under ``data_root`` when it is relative."""
        if path is None or self.data_root is None:
            return path
        return str(Path(self.data_root) / path)

    def _mixture_set(self, mixture: Mixture, size: int, split: str) -> MixtureDataset:
        encoders = {
            document: self.encoding.encoder(
                self.tokenizer, DOCUMENT_TEMPLATE if document else self.chat_template
            )
            for document in (False, True)
        }
        encoded = [
            EncodedSource(
                samples, encoders[document], self.max_sample_tokens, self.loader.num_workers
            )
            for samples, document in self._sources(mixture, size, split)
        ]
        categories = [source.category for source in mixture.sources]
        probabilities = mixture.probabilities()
        return MixtureDataset(
            encoded, categories, probabilities, size, self.seed, split, self.policy
        )

    def setup(self, stage: str) -> None:
        self._adopt_trainer_geometry()
        self.train_set = self._mixture_set(self.train_mixture, self.train_size, "train")
        self.val_set = self._mixture_set(self.val_mixture, self.val_size, "val")
        if self.loader.max_tokens is not None:
            # token counts are cached beside file sources' indexes: one process per node
            # counts them, the others read them
            self._local_zero_first(lambda: (self.train_set.lengths(), self.val_set.lengths()))
        if self.trainer is not None and not any(
            isinstance(c, MixtureStatsLogger) for c in self.trainer.callbacks
        ):
            self.trainer.callbacks.append(MixtureStatsLogger())  # stateless: order is free

    def _local_zero_first(self, work: Callable[[], object]) -> None:
        """Run ``work`` on local rank 0, then on the node's other ranks."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            work()
            return
        if trainer.local_rank == 0:
            work()
        trainer.strategy.barrier("mm15_components.local_zero_first")
        if trainer.local_rank != 0:
            work()

    def train_dataloader(self) -> ResumableLoader:
        pad = self.tokenizer.pad_token_id
        counts = MixtureCounts()
        return self.loader.build(
            self.train_set, pad, self.seed, train=True, trainer=self.trainer, counts=counts
        )

    def val_dataloader(self) -> ResumableLoader:
        pad = self.tokenizer.pad_token_id
        return self.loader.build(self.val_set, pad, self.seed, train=False, trainer=self.trainer)
