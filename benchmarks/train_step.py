"""Training-step throughput of a recipe: samples/s, tokens/s, peak memory and MFU.

Runs ``mm15 fit`` with the given recipe files and overrides for ``--warmup + --steps``
optimizer steps and times the last ``--steps`` of them (synchronised with the device), so
the figure includes everything a real run does: data loading, the Lightning loop, mixed
precision, sharding and the optimizer. Writes one JSON object (stdout and ``--output``).

Model FLOPs per batch, forward + backward, every parameter trained (PaLM's
convention, attention counted in full):

* LLM: ``6 * N_llm * T + 12 * L * d * T * s`` for ``T`` tokens in sequences of length ``s``
  (``N_llm`` without the input embedding, a lookup), ``L`` layers of width ``d``;
* vision tower and connector, per tile of ``P`` patch tokens:
  ``6 * N_vision * P + 12 * L_v * d_v * P**2`` and ``6 * N_connector * P``.

MFU is those FLOPs per second over ``--peak_tflops`` (dense bf16 of the device).

    python benchmarks/train_step.py --peak_tflops 790 --steps 10 -- \
        --config recipes/models/mm15_1b.yaml --config recipes/stages/sft.yaml \
        --config recipes/data/synthetic.yaml --config recipes/snippets/random_init.yaml \
        --trainer.devices=1 --trainer.strategy.init_args.data_parallel_size=1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from mm15_components.cli import _cli
from mm15_components.model import MM15Model


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_batch(model: MM15Model, tokens: int, seq_len: int, tiles: int) -> float:
    """Forward + backward model FLOPs of one batch (see the module docstring)."""
    language, vision = model.language, model.vision
    embedding = language.input_embeddings.weight.numel()
    tied = getattr(language.config, "tie_word_embeddings", False)
    n_llm = count(language) - (0 if tied else embedding)  # a tied table is the output head
    layers = len(language.layers)
    llm = 6 * n_llm * tokens + 12 * layers * language.hidden_size * tokens * seq_len
    rows, cols = vision.grid_size
    patches = rows * cols + 1
    vision_flops = 6 * count(vision) * patches + 12 * len(vision.blocks) * vision.width * patches**2
    connector = 6 * count(model.connector) * patches
    return float(llm + tiles * (vision_flops + connector))


class StepTimer(Callback):
    """Wall time, tokens and tiles of the optimizer steps after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.batches: list[dict[str, int]] = []
        self.start: float | None = None
        self.seconds = 0.0

    def _sync(self, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self._sync(pl_module)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.start = time.perf_counter()
        if self.start is not None:
            self.batches.append(
                {
                    "samples": len(batch["ids"]),
                    "tokens": int(batch["attention_mask"].sum()),
                    "seq_len": batch["input_ids"].shape[1],
                    "tiles": batch["pixel_values"].shape[0],
                }
            )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(pl_module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--peak_tflops", type=float, default=790.0, help="H200 dense bf16")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv[:split])
    timer = StepTimer(args.warmup)
    cli = _cli(
        [
            *argv[split + 1 :],
            f"--trainer.max_steps={args.warmup + args.steps}",
            "--trainer.limit_val_batches=0",
            "--trainer.callbacks=[]",
            "--trainer.enable_checkpointing=false",
            "--trainer.logger=false",
        ],
        run=False,
    )
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    model: MM15Model = cli.model.model
    accumulate = cli.trainer.accumulate_grad_batches
    steps = len(timer.batches) / accumulate
    flops = sum(
        flops_per_batch(model, b["tokens"], b["seq_len"], b["tiles"]) for b in timer.batches
    )
    world = cli.trainer.world_size
    device = cli.model.device
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world,
        "optimizer_steps": steps,
        "seconds": timer.seconds,
        "samples_per_s": world * sum(b["samples"] for b in timer.batches) / timer.seconds,
        "tokens_per_s": world * sum(b["tokens"] for b in timer.batches) / timer.seconds,
        "tiles_per_sample": sum(b["tiles"] for b in timer.batches)
        / sum(b["samples"] for b in timer.batches),
        "tokens_per_sample": sum(b["tokens"] for b in timer.batches)
        / sum(b["samples"] for b in timer.batches),
        "model_tflops_per_s": world * flops / timer.seconds / 1e12,
        "mfu": flops / timer.seconds / 1e12 / args.peak_tflops,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "parameters": count(model),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
