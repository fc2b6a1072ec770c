"""MM15Module: the LightningModule that trains and evaluates an MM15Model."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from mm15_components.data.schema import PackedBatch, TrainingBatch
from mm15_components.grounding.codec import BoxCodec
from mm15_components.grounding.decoding import BoxLogitsProcessor
from mm15_components.grounding.embeddings import coordinate_token_ids, init_sinusoidal
from mm15_components.grounding.head import CoordinateGroundingHead
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language.tokenizer import IMAGE_TOKEN
from mm15_components.metrics.grounding import first_boxes
from mm15_components.metrics.validation import VALIDATION_METRICS, validation_scores
from mm15_components.model import MM15Model
from mm15_components.moe.layer import MoEFeedForward
from mm15_components.parallelize import parallelize
from mm15_components.pretrained import greedy_answers
from mm15_components.weights import load_weights_from

COMPONENTS = ("vision", "connector", "language")
MIXED_PRECISION_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""Compute dtypes of the trainer's mixed precisions; weights and optimizer stay fp32."""


class MM15Module(L.LightningModule):
    """Next-token training on answer tokens, greedy-decoding evaluation, FSDP2 sharding.

    Args:
        model: the multimodal model.
        tokenizer: the data's tokenizer (linked from ``data.tokenizer`` by the CLI); the
            model's vocabulary is sized to it.
        optimizer: optimizer factory (YAML ``class_path``/``init_args``); its ``lr`` is the base.
        lr_scheduler: scheduler factory, stepped every optimizer step.
        freeze: components whose weights stay fixed (``vision``, ``connector``, ``language``).
        lr_multipliers: per-component factors on the base learning rate, e.g.
            ``{vision: 5.0, connector: 5.0}``.
        weight_decay: applied to matrices only (not to biases, norms, embeddings of dim < 2).
        activation_checkpointing: keep only the inputs of each vision block and decoder
            layer in forward and recompute the rest in backward (the one switch for it).
        codec: the box codec used to write and read boxes (linked from ``data.codec`` by the
            CLI, so data and model always agree).
        grounding_head: adds a distance-aware loss on coordinate tokens (needs one token per
            coordinate value).
        coordinate_init: ``sinusoidal`` gives the coordinate tokens (when each bin is one
            token) embeddings that encode their value, so nearby bins start close; ``default``
            leaves the LM's own initialisation.
        max_new_tokens: generation budget of evaluation answers.
        constrained_decoding: once an answer starts a box, allow only tokens that complete
            it in the codec's grammar (``BoxLogitsProcessor``), so every box parses.
        init_from: start from the weights of another run (weights only: the optimizer and
            the step count start afresh): a Lightning checkpoint file, an FSDP2 distributed
            checkpoint directory or an exported model directory (``mm15_components.
            weights``). A dense checkpoint fills an MoE model's experts (upcycling).
        init_strict: with ``init_from``, refuse a checkpoint that leaves any weight of the
            model unset or holds weights the model lacks; False loads what fits and logs
            the rest.
    """

    def __init__(
        self,
        model: MM15Model,
        tokenizer: PreTrainedTokenizerBase,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze: list[str] | None = None,
        lr_multipliers: dict[str, float] | None = None,
        weight_decay: float = 0.0,
        activation_checkpointing: bool = False,
        codec: BoxCodec | None = None,
        grounding_head: CoordinateGroundingHead | None = None,
        coordinate_init: Literal["default", "sinusoidal"] = "default",
        max_new_tokens: int = 24,
        constrained_decoding: bool = False,
        init_from: str | None = None,
        init_strict: bool = True,
    ) -> None:
        super().__init__()
        self.freeze = list(freeze or [])
        self.lr_multipliers = dict(lr_multipliers or {})
        for name in [*self.freeze, *self.lr_multipliers]:
            if name not in COMPONENTS:
                raise ValueError(
                    f"unknown component {name!r} in freeze/lr_multipliers; choose from {COMPONENTS}"
                )
        self.model = model
        self.tokenizer = tokenizer
        model.set_vocabulary(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        for name in self.freeze:
            getattr(model, name).requires_grad_(False)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.weight_decay = weight_decay
        self.activation_checkpointing = activation_checkpointing
        self.codec = codec or BoxCodec()
        self.grounding_head = grounding_head
        if coordinate_init == "sinusoidal" or grounding_head is not None:
            token_ids = coordinate_token_ids(tokenizer, self.codec)
            if token_ids is None:
                raise ValueError(
                    "coordinate_init='sinusoidal' and grounding_head need one token per "
                    "coordinate value; this tokenizer splits numbers (use codec style 'tokens')"
                )
            if coordinate_init == "sinusoidal":
                init_sinusoidal(model.language.input_embeddings.weight, token_ids)
            if grounding_head is not None:
                grounding_head.bind(token_ids)
        if init_from is not None:
            report = load_weights_from(model, init_from, strict=init_strict)
            (rank_zero_info if report.fits else rank_zero_warn)(f"{init_from}: {report}")
        self.max_new_tokens = max_new_tokens
        self.box_processor = (
            BoxLogitsProcessor(tokenizer, self.codec) if constrained_decoding else None
        )
        self.moe_layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
        self.val_loss = MeanMetric()
        self.val_scores = nn.ModuleDict(validation_scores())
        self.answers_path: Path | None = None

    # ---- training -------------------------------------------------------------------------
    def answer_loss(
        self, batch: TrainingBatch | PackedBatch, with_head: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Summed next-token cross-entropy over answer tokens, their count, and the grounding
        head's summed loss (None without a head or when not asked for)."""
        logits = self.model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            batch["position_ids"],
        )
        logits, labels = logits[:, :-1], batch["labels"][:, 1:]
        loss_sum = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        head_sum = None
        if with_head and self.grounding_head is not None:
            head_sum = self.grounding_head(logits, labels)
        return loss_sum, (labels != IGNORE_INDEX).sum(), head_sum

    def training_step(self, batch: TrainingBatch | PackedBatch, batch_idx: int) -> torch.Tensor:
        loss_sum, count, head_sum = self.answer_loss(batch, with_head=True)
        # Normalise by the answer tokens of the whole global batch, so the gradient (averaged
        # over ranks) equals a single-process run on that batch however tokens are split.
        global_count = self.all_gather(count).sum().clamp(min=1)
        world = self.trainer.world_size
        loss = loss_sum * world / global_count
        global_loss = self.all_gather(loss_sum.detach()).sum() / global_count
        self.log("train/loss", global_loss, prog_bar=True, batch_size=len(batch["ids"]))
        if head_sum is not None:
            loss = loss + head_sum * world / global_count
            global_head = self.all_gather(head_sum.detach()).sum() / global_count
            self.log("train/coordinate_loss", global_head, batch_size=len(batch["ids"]))
        if self.moe_layers:
            loss = loss + self.moe_auxiliary_loss()
        return loss

    def moe_auxiliary_loss(self) -> torch.Tensor:
        """Weighted balance + z losses of every MoE layer's last forward; logs them and the
        expert load (max and mean tokens per expert, over layers)."""
        layers = self.moe_layers
        self.log("train/moe_balance", torch.stack([m.balance_loss for m in layers]).mean())
        self.log("train/moe_z", torch.stack([m.z_loss for m in layers]).mean())
        load = torch.stack([m.tokens_per_expert for m in layers]).float()
        self.log("train/moe_load_max", load.max(dim=1).values.mean())
        self.log("train/moe_load_mean", load.mean())
        return torch.stack([m.aux_loss for m in layers]).sum()

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch: TrainingBatch, batch_idx: int) -> None:
        loss_sum, count, _ = self.answer_loss(batch)
        self.val_loss.update(loss_sum / count.clamp(min=1), weight=count)
        self.log("val/loss", self.val_loss, prog_bar=True)
        records = self.evaluate_answers(batch)
        if records and self.answers_path is not None:
            with self.answers_path.open("a", encoding="utf-8") as file:
                file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    def on_validation_epoch_start(self) -> None:
        """Start this validation's answers file, ``<log_dir>/predictions/val_epoch{E}_step{S}
        _rank{R}.jsonl`` (none during the sanity check or without a logger)."""
        self.answers_path = None
        trainer = self.trainer
        if trainer.sanity_checking or trainer.logger is None:
            return
        log_dir = trainer.log_dir  # called on every rank: it is broadcast from rank 0
        if log_dir is None:  # e.g. fast_dev_run's logger
            return
        name = f"val_epoch{trainer.current_epoch}_step{trainer.global_step}"
        self.answers_path = (
            Path(log_dir) / "predictions" / f"{name}_rank{trainer.global_rank}.jsonl"
        )
        self.answers_path.parent.mkdir(parents=True, exist_ok=True)
        self.answers_path.write_text("", encoding="utf-8")

    def on_validation_epoch_end(self) -> None:
        """Log every score some rank updated this epoch (each rank syncs the same ones, in the
        same order), then reset them all."""
        names = list(self.val_scores)
        updated = torch.tensor(
            [self.val_scores[name].update_count > 0 for name in names], device=self.device
        )
        updated = self.trainer.strategy.reduce(updated.long(), reduce_op="sum")
        for name, count in zip(names, updated.tolist(), strict=True):
            metric = self.val_scores[name]
            if count:
                with warnings.catch_warnings():  # a rank that saw none of these samples
                    warnings.filterwarnings("ignore", "The ``compute`` method of metric")
                    value = metric.compute()
                self.log(f"val/{name}", value, prog_bar=name in VALIDATION_METRICS)
            metric.reset()

    def evaluate_answers(self, batch: TrainingBatch) -> list[dict[str, Any]]:
        """Generate an answer for every sample of a batch that has a ``metric``, score it (and
        its baseline) by that metric, and return one record per sample for the answers file.

        A sample the data could not read (its ``error`` is set) is not asked and scores 0.
        Under several processes every rank generates once per batch, even with nothing to
        score, so that sharded weights are gathered in step.
        """
        metrics = batch["metrics"]
        rows = [i for i, name in enumerate(metrics) if name is not None]
        asked = [i for i in rows if batch["errors"][i] is None]
        answers: dict[int, str] = {}
        if asked or distributed():
            mask = torch.zeros(len(metrics), dtype=torch.bool, device=batch["prompt_ids"].device)
            mask[asked or [0]] = True
            answers = dict(zip(asked, self.generate_rows(batch, mask), strict=False))
        records = []
        for name in dict.fromkeys(metrics[i] for i in rows):
            group = [i for i in rows if metrics[i] == name]
            records += self.score_answers(batch, name, group, [answers.get(i) for i in group])
        return records

    def score_answers(
        self, batch: TrainingBatch, name: str, rows: list[int], answers: list[str | None]
    ) -> list[dict[str, Any]]:
        """Update metric ``name`` (and its baseline) with the answers to ``rows`` of a batch
        (None: not answered); returns their records for the answers file."""
        spec = VALIDATION_METRICS[name]
        baseline = self.val_scores[f"{name}_{spec.baseline}"]
        if spec.answer == "box":
            preds = self.first_boxes(answers, batch["image_sizes"][rows].tolist())
            targets = batch["target_boxes"][rows]
            constant = batch["baseline_boxes"][rows]
            has_constant = torch.isfinite(constant).all(-1)
            if has_constant.any():
                baseline.update(constant[has_constant], targets[has_constant])
            if spec.mean_iou is not None:
                self.val_scores[spec.mean_iou].update(preds, targets)
            references = [[box] for box in targets.tolist()]
        else:
            preds = answers
            targets = references = [batch["answers"][i] for i in rows]
            majority = [i for i in rows if batch["baseline_answers"][i] is not None]
            if majority:
                baseline.update(
                    [batch["baseline_answers"][i] for i in majority],
                    [batch["answers"][i] for i in majority],
                )
        metric = self.val_scores[name]
        scores = metric.scores(preds, targets).tolist()
        metric.update(preds, targets)
        records = []
        for k, row in enumerate(rows):
            record = {
                "id": batch["ids"][row],
                "metric": name,
                "question": batch["questions"][row],
                "answer": answers[k],
                "references": references[k],
                "score": scores[k],
            }
            if spec.answer == "box":
                box = preds[k].tolist()
                record["box"] = box if all(map(math.isfinite, box)) else None
            if batch["errors"][row] is not None:
                record["error"] = batch["errors"][row]
            records.append(record)
        return records

    def first_boxes(self, answers: list[str | None], sizes: list[list[int]]) -> torch.Tensor:
        """``[N, 4]`` first box of each answer in pixels of its image (``sizes``: height,
        width); NaN rows for answers without one and for None."""
        return first_boxes(
            [
                [] if answer is None else self.codec.decode(answer, image_size=tuple(hw))
                for answer, hw in zip(answers, sizes, strict=True)
            ]
        )

    def predict_boxes(self, batch: TrainingBatch, rows: torch.Tensor) -> torch.Tensor:
        """``[rows, 4]`` first box of the greedy answer to each selected sample of a batch
        (``rows``: a bool mask; pixels of its image; NaN where the answer has none)."""
        return self.first_boxes(
            self.generate_rows(batch, rows), batch["image_sizes"][rows].tolist()
        )

    def generate_rows(self, batch: TrainingBatch, rows: torch.Tensor) -> list[str]:
        """Greedy answers to the samples of a batch selected by the bool mask ``rows``."""
        keep_images = torch.repeat_interleave(rows, batch["tiles_per_sample"])
        return self.generate(
            batch["prompt_ids"][rows],
            batch["prompt_mask"][rows],
            batch["pixel_values"][keep_images],
        )

    def generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pixel_values: torch.Tensor
    ) -> list[str]:
        """Greedy answers to left-padded prompts, as text."""
        return greedy_answers(
            self.model,
            self.tokenizer,
            prompt_ids,
            prompt_mask,
            pixel_values,
            self.max_new_tokens,
            self.box_processor,
            # ranks finishing early keep stepping: sharded weights gather on every rank
            synced_gpus=distributed(),
        )

    def predict_step(self, batch: TrainingBatch, batch_idx: int) -> list[dict[str, Any]]:
        """Each sample's ``id``, greedy ``answer`` and the ``boxes`` read from it, in pixels
        of its original image."""
        answers = self.generate(batch["prompt_ids"], batch["prompt_mask"], batch["pixel_values"])
        sizes = batch["image_sizes"].tolist()
        return [
            {"id": id, "answer": answer, "boxes": self.codec.decode(answer, image_size=tuple(hw))}
            for id, answer, hw in zip(batch["ids"], answers, sizes, strict=True)
        ]

    # ---- optimisation and scale -----------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = []
        for name in COMPONENTS:
            if name in self.freeze:
                continue
            params = [p for p in getattr(self.model, name).parameters() if p.requires_grad]
            scale = self.lr_multipliers.get(name, 1.0)
            for decay in (True, False):
                chosen = [p for p in params if (p.ndim >= 2) == decay]
                if chosen:
                    groups.append(
                        {
                            "params": chosen,
                            "lr_scale": scale,
                            "weight_decay": self.weight_decay if decay else 0.0,
                        }
                    )
        optimizer = self.optimizer(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def configure_model(self) -> None:
        """Activation checkpointing and, under ``ModelParallelStrategy``, FSDP2 sharding with
        the trainer's mixed precision (``mm15_components.parallelize``)."""
        mesh = None if self.device_mesh is None else self.device_mesh["data_parallel"]
        precision = str(getattr(self._trainer, "precision", "32-true"))  # no trainer: scripts
        parallelize(
            self.model,
            mesh,
            param_dtype=MIXED_PRECISION_DTYPES.get(precision),
            activation_checkpointing=self.activation_checkpointing,
        )


def distributed() -> bool:
    """Whether this process is one of several (forward passes may then gather weights)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
