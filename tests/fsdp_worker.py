"""Trains the tiny quickstart model a few steps and writes the per-step losses as JSON.

Run as ``python fsdp_worker.py OUT.json DEVICES BATCH_SIZE``: with 2 devices it uses FSDP2
(ModelParallelStrategy, gloo on CPU); Lightning relaunches this script for rank 1. The 2-rank
run also saves its distributed checkpoint (``sharded/``) and its weights gathered whole
(``gathered.pt``) beside OUT.json.
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from helpers import tiny_model
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import ModelParallelStrategy

from mm15_components import MM15Module
from mm15_components.data import Loader, SyntheticDataModule


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def main(out: str, devices: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0)
    data = SyntheticDataModule(val_samples=8, loader=Loader(batch_size=batch_size, shuffle=False))
    module = MM15Module(
        tiny_model(), data.tokenizer, optimizer=lambda p: torch.optim.SGD(p, lr=0.5)
    )
    strategy = (
        ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        if devices > 1
        else "auto"
    )
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[recorder],
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    if devices > 1:
        folder = Path(out).parent
        trainer.save_checkpoint(folder / "sharded")
        whole = {k: v.full_tensor() for k, v in module.model.state_dict().items()}
        if trainer.global_rank == 0:
            torch.save(whole, folder / "gathered.pt")
    if trainer.global_rank == 0:
        with open(out, "w") as f:
            json.dump(recorder.losses, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
