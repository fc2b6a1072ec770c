"""Data pipeline throughput against the quickstart model's training rate: would the loader
starve the model?

Two pipelines, each run through ``SyntheticDataModule``'s training loader (2 workers by
default), timed over whole batches after the workers' first batch:

- ``quickstart``: the quickstart recipe's data (64 px images rendered on the fly, one 16-token
  image each, word tokenizer, batch 32).
- ``anyres``: the same samples rendered at ``--anyres_size`` px, stored as JPEG and decoded in
  the worker, then split by ``AnyResSplitter`` into 378 px tiles (4..9 plus an overview, 144
  tokens each) and normalised: decode + split + tokenize + collate.

The model side is the quickstart recipe's model (built from the YAML) doing forward, backward
and an AdamW step on quickstart batches, on ``--threads`` torch threads, in the same process.
Loader and model are timed one after the other, not together: on a 2-core machine they would
share the cores in training. A ratio above 1 means the loader keeps up.

    HF_HUB_OFFLINE=1 python benchmarks/data.py [--batches 12] [--workers 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from pathlib import Path

import torch
from PIL import Image
from timing import timed
from torch.utils.data import Dataset

from mm15_components.cli import build_from_config
from mm15_components.data import SyntheticDataModule
from mm15_components.data.datamodule import EncodedDataset
from mm15_components.data.encoding import Encoding
from mm15_components.data.loader import Loader
from mm15_components.data.schema import Sample
from mm15_components.vision.anyres import AnyResSplitter

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
BATCH = 32


class JPEGSamples(Dataset):
    """Samples whose images are kept as JPEG bytes and decoded on every read, like files."""

    def __init__(self, samples: Dataset, count: int) -> None:
        self.samples = []
        for index in range(count):
            sample = samples[index]
            encoded = []
            for image in sample.images:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="JPEG", quality=90)
                encoded.append(buffer.getvalue())
            self.samples.append((sample, encoded))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        sample, encoded = self.samples[index]
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in encoded]
        return dataclasses.replace(sample, images=images)


def loader_rate(data: SyntheticDataModule, batches: int) -> float:
    """Samples per second over ``batches`` batches, after the first one (worker start-up)."""
    iterator = iter(data.train_dataloader())
    next(iterator)
    seconds, samples = timed(lambda: sum(len(next(iterator)["ids"]) for _ in range(batches)))
    return samples / seconds


def quickstart_data(workers: int, samples: int) -> SyntheticDataModule:
    data = SyntheticDataModule(
        encoding=Encoding(image_size=64, image_tokens=16),
        loader=Loader(batch_size=BATCH, num_workers=workers),
        train_samples=samples,
    )
    data.setup("fit")
    return data


def anyres_data(workers: int, samples: int, size: int) -> SyntheticDataModule:
    splitter = AnyResSplitter(tile_size=378, min_tiles=4, max_tiles=9)
    data = SyntheticDataModule(
        encoding=Encoding(image_size=378, image_tokens=144, splitter=splitter),
        loader=Loader(batch_size=BATCH, num_workers=workers),
    )
    data.setup("fit")
    rendered = SyntheticDataModule(
        encoding=Encoding(image_size=size), train_samples=samples
    ).train_samples
    data.train_set = EncodedDataset(JPEGSamples(rendered, samples), data.train_set.encoder)
    return data


def model_rate(steps: int, threads: int) -> float:
    """The quickstart recipe's model and data: training samples per second (forward,
    backward, AdamW step), batches prepared beforehand."""
    torch.set_num_threads(threads)
    module, data = build_from_config(str(QUICKSTART), "--data.init_args.loader.num_workers=0")
    data.setup("fit")
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    batches = iter(data.train_dataloader())
    warm = [next(batches) for _ in range(2)]
    measured = [next(batches) for _ in range(steps)]

    def step(batch: dict) -> None:
        loss_sum, count, _ = module.answer_loss(batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()

    for batch in warm:
        step(batch)
    seconds, _ = timed(lambda: [step(batch) for batch in measured])
    return steps * BATCH / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=12, help="timed loader batches")
    parser.add_argument("--steps", type=int, default=8, help="timed model steps")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the model")
    parser.add_argument("--anyres_size", type=int, default=1024, help="rendered image side")
    args = parser.parse_args()
    samples = (args.batches + 1 + 2 * args.workers) * BATCH  # timed + first + prefetched

    quick = quickstart_data(args.workers, samples)
    rates = {
        "quickstart": loader_rate(quick, args.batches),
        f"anyres ({args.anyres_size} px JPEG -> 378 px tiles)": loader_rate(
            anyres_data(args.workers, samples, args.anyres_size), args.batches
        ),
    }
    model = model_rate(args.steps, args.threads)
    print(
        f"quickstart model, training: {model:.1f} samples/s = {model / BATCH:.2f} steps/s x {BATCH}"
    )
    for name, rate in rates.items():
        print(f"loader, {args.workers} workers, {name}: {rate:.1f} samples/s, {rate / model:.1f}x")


if __name__ == "__main__":
    main()
