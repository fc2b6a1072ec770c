"""Validates the tiny model on five questions of three metrics and writes the logged metrics
as JSON; the answers go to ``OUT_DIR/eval/.../predictions``.

Run as ``python eval_worker.py OUT_DIR DEVICES``: with 2 devices it uses FSDP2
(ModelParallelStrategy, gloo on CPU) and rank 0 alone sees the ``anls`` question, rank 1
alone the boxes; Lightning relaunches this script for rank 1. Generation runs for real (the
sharded passes), then each question gets the scripted answer below, so scores are known.
"""

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from helpers import tiny_model
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from PIL import Image

from mm15_components import MM15Module
from mm15_components.data import BenchmarkDataModule, Loader
from mm15_components.data.prompt import question_turn
from mm15_components.grounding.codec import BoxCodec

BOX = (4.0, 4.0, 40.0, 30.0)
METRICS = ["exact_match", "grounding_acc", "exact_match", "grounding_acc", "anls"]
# q0 right, q1 the target box, q2 wrong, q3 the whole image (IoU 0.3), q4 one edit off
ANSWERS = ["red", BoxCodec().encode(BOX, (48, 64)), "blue", "[0, 0, 999, 999]", "rod"]


class ScriptedAnswers(MM15Module):
    def generate(self, prompt_ids, prompt_mask, pixel_values):
        super().generate(prompt_ids, prompt_mask, pixel_values)
        prompts = self.tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        return [ANSWERS[int(re.search(r"circle (\d)", p).group(1))] for p in prompts]


def questions(root: Path) -> Path:
    records = []
    for k in range(5):
        Image.new("RGB", (64, 48), (40 * k, 200 - 30 * k, 90)).save(root / f"{k}.png")
        question = question_turn(f"Where is the red circle {k}?").content
        conversation = [{"from": "human", "value": question}, {"from": "gpt", "value": "red"}]
        records.append({"id": f"q{k}", "image": f"{k}.png", "conversations": conversation})
    path = root / "questions.json"
    path.write_text(json.dumps(records))
    return path


def main(out: str, devices: int) -> None:
    torch.set_num_threads(1)
    root = Path(out)
    L.seed_everything(0)
    data = BenchmarkDataModule("llava", str(questions(root)), loader=Loader(batch_size=2))
    # rank r of 2 answers questions r, r + 2, ...
    data.records = [
        replace(record, metric=metric, target_box=BOX if metric == "grounding_acc" else None)
        for record, metric in zip(data.records, METRICS, strict=True)
    ]
    module = ScriptedAnswers(tiny_model(), data.tokenizer, max_new_tokens=4)
    strategy = (
        ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        if devices > 1
        else "auto"
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=CSVLogger(root, name="eval"),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    logged = trainer.validate(module, data, verbose=False)[0]
    if trainer.global_rank == 0:
        (root / "metrics.json").write_text(json.dumps(logged))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
