"""``mm15 predict`` output: the answers as JSON lines and the images with their boxes drawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from mm15_components.data.schema import PredictBatch
from mm15_components.grounding.draw import draw_boxes


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.jsonl`` and one PNG per image into ``output_dir``.

    Each JSON line holds the sample ``id`` (the image path, or ``VIDEO#frame=K``), the
    ``query``, the ``answer`` text, its ``boxes`` as ``[x1, y1, x2, y2]`` in pixels of the
    original image, and the ``png`` file name. The PNG is the image with those boxes drawn and
    labelled with the query (see :func:`~mm15_components.grounding.draw.draw_boxes`).

    Reads ``MM15Module.predict_step`` outputs and the ``images``, ``names`` and ``queries`` of
    :class:`~mm15_components.data.QueryDataModule` batches. Under several processes each rank
    writes its own ``predictions.rank{R}.jsonl``.

    Args:
        output_dir: folder for the outputs; created if missing, earlier outputs overwritten.
    """

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.count = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        rank = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        self.path = self.output_dir / f"predictions{rank}.jsonl"
        self.path.write_text("")
        self.count = 0

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: list[dict[str, Any]],
        batch_indices: Any,
        batch: PredictBatch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        with self.path.open("a") as file:
            for result, image, name, query in zip(
                prediction, batch["images"], batch["names"], batch["queries"], strict=True
            ):
                boxes = [list(box) for box in result["boxes"]]
                png = f"{name}.png"
                draw_boxes(image, boxes, [query] * len(boxes)).save(self.output_dir / png)
                record = {
                    "id": result["id"],
                    "query": query,
                    "answer": result["answer"],
                    "boxes": boxes,
                    "png": png,
                }
                file.write(json.dumps(record) + "\n")
                rank_zero_info(f"{result['id']}: {result['answer']!r} -> {boxes}")
        self.count += len(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(f"wrote {self.count} predictions to {self.path} and their PNGs")
