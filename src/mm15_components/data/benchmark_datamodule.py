"""The evaluation data module: one standard benchmark read from local files."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from mm15_components.data.benchmarks import BenchmarkName, EncodedBenchmark, read_benchmark
from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.formats import BadSamplePolicy, OnBadSample
from mm15_components.data.loader import Loader
from mm15_components.data.sampler import ResumableBatchSampler, ResumableLoader
from mm15_components.metrics.validation import validation_metric


class BenchmarkDataModule(ModelGeometry, L.LightningDataModule):
    """A standard benchmark as validation data, so that
    ``mm15 validate --config MODEL.yaml --config recipes/eval/BENCHMARK.yaml --ckpt_path CK``
    logs its metric (``val/vqa_acc``, ``val/anls``, ``val/relaxed_acc``,
    ``val/grounding_acc``, ...) and writes every answer to ``<log_dir>/predictions/``.

    Questions are asked as the training data asks (:mod:`~mm15_components.data.prompt`, the
    tokenizer's chat template) and answered greedily; the files' layouts are in
    :mod:`~mm15_components.data.benchmarks`. Under several processes each rank answers every
    world-size-th question, once: no question is counted twice.

    Args:
        benchmark: the file layout, which sets the metric: ``textvqa`` (VQA accuracy),
            ``docvqa`` and ``infovqa`` (ANLS), ``chartqa`` (relaxed accuracy), ``refcoco``
            (Acc@IoU0.5, for RefCOCO, RefCOCO+ and RefCOCOg), ``llava`` (``metric``).
        path: the annotation file (for ``refcoco``, the ``refs`` file).
        image_root: the folder image paths are relative to; default: where the release
            keeps them (``benchmarks.IMAGE_FOLDERS``: ``train_images/`` beside TextVQA's file,
            ``png/`` beside ChartQA's, the file's own folder for the others).
        prompt: how each question is asked, with ``{question}`` in it; default: the short
            answer prompt (``benchmarks.DEFAULT_PROMPTS``). Not used by ``llava`` records.
        split: the RefCOCO split (``val``, ``testA``, ``testB``, ``test``).
        instances: RefCOCO's COCO ``instances.json`` (default: beside ``path``).
        metric: how ``llava`` answers are scored (a name of ``VALIDATION_METRICS``).
        max_samples: evaluate the first this many questions only; None: all.
        on_bad_sample: ``raise`` stops at a malformed record or a missing image; ``skip``
            counts and reports them: malformed records are left out, questions whose images
            cannot be read stay and score 0.
        max_bad_fraction: under ``skip``, the largest share of the file's records that may be
            bad; past it (judged after 200 records, or all of a smaller file) reading stops,
            naming the file: a wrong ``image_root`` is an error, not a score.
        encoding: the model's data settings (``Encoding``), as in its training data module
            (``mm15 validate`` keeps those of the model recipe); unset geometry takes the
            model's.
        loader: its ``batch_size`` and ``num_workers`` (the questions keep their order, one
            per row).
    """

    def __init__(
        self,
        benchmark: BenchmarkName,
        path: str,
        image_root: str | None = None,
        prompt: str | None = None,
        split: str = "val",
        instances: str | None = None,
        metric: str = "exact_match",
        max_samples: int | None = None,
        on_bad_sample: OnBadSample = "raise",
        max_bad_fraction: float = 0.1,
        encoding: Encoding = Encoding(),
        loader: Loader = Loader(batch_size=8),
    ) -> None:
        super().__init__()
        self.encoding, self.loader = encoding, loader
        validation_metric(metric, where=f"BenchmarkDataModule({benchmark!r})")
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer()
        self.policy = BadSamplePolicy(on_bad_sample, max_bad_fraction)
        self.records = read_benchmark(
            benchmark,
            Path(path),
            self.policy,
            image_root=Path(image_root) if image_root else None,
            prompt=prompt,
            split=split,
            instances=Path(instances) if instances else None,
            metric=metric,
            encode_box=self.codec.encode,
        )[:max_samples]
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(self.policy.counts.items()))
        rank_zero_info(
            f"{benchmark}: {len(self.records)} question(s) from {path}"
            + (f"; bad records ({skipped}): see the warnings" if skipped else "")
        )

    def sample_encoder(self) -> SampleEncoder:
        """How questions become model inputs, with the geometry adopted so far."""
        return self.encoding.encoder(self.tokenizer)

    def setup(self, stage: str) -> None:
        self._adopt_trainer_geometry()
        ranks = {"world": 1, "rank": 0}
        if self.trainer is not None and self.trainer.world_size > 1:
            kwargs = self.trainer.strategy.distributed_sampler_kwargs
            ranks = {"world": kwargs["num_replicas"], "rank": kwargs["rank"]}
        self.val_set = EncodedBenchmark(self.records, self.sample_encoder(), self.policy, **ranks)

    def val_dataloader(self) -> ResumableLoader:
        # not a DataLoader, so Lightning leaves its order alone: the ranks are split already
        loader = DataLoader(
            self.val_set,
            batch_sampler=ResumableBatchSampler(
                len(self.val_set), self.loader.batch_size, shuffle=False
            ),
            num_workers=self.loader.num_workers,
            collate_fn=partial(collate, pad_token_id=self.tokenizer.pad_token_id),
        )
        return ResumableLoader(loader)
