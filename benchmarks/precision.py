"""Training steps of a recipe's model on CPU: fp32 against bf16 autocast (``bf16-mixed``).

Two copies of the recipe's model start from the same weights and train on the same batches,
one in fp32 and one under ``torch.autocast("cpu", torch.bfloat16)`` (what Lightning's
``precision: bf16-mixed`` does; weights and optimizer state stay fp32). Steps alternate
between the two, so load from other processes hits both alike. Prints the median step time of
each, their ratio, and the answer loss of both copies along the way: bf16 is only worth it
where the losses track.

    python benchmarks/precision.py [--config recipes/quickstart.yaml --steps 40 --threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time

import torch
from lightning.pytorch import LightningDataModule

from mm15_components.cli import MM15CLI
from mm15_components.module import MM15Module


def build(config: str) -> tuple[MM15Module, LightningDataModule]:
    """The recipe's model and data, as ``mm15 fit --config`` would build them."""
    cli = MM15CLI(
        MM15Module,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", config, "--trainer.logger=false"],
    )
    cli.model.configure_model()
    return cli.model, cli.datamodule


def train_step(module: MM15Module, optimizer: torch.optim.Optimizer, batch, bf16: bool):
    """One optimizer step on the mean answer-token loss; returns (seconds, loss)."""
    autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
    start = time.perf_counter()
    with autocast:
        loss_sum, count, _ = module.answer_loss(batch)
    loss = loss_sum / count.clamp(min=1)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    del sys.argv[1:]  # read above; the recipe's parser must not see them

    torch.set_num_threads(args.threads)
    fp32_module, data = build(args.config)
    bf16_module = copy.deepcopy(fp32_module)
    data.setup("fit")
    contenders = {
        "fp32": (fp32_module, torch.optim.AdamW(fp32_module.parameters(), lr=args.lr), False),
        "bf16-mixed": (bf16_module, torch.optim.AdamW(bf16_module.parameters(), lr=args.lr), True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    losses: dict[str, list[float]] = {name: [] for name in contenders}
    batches = iter(data.train_dataloader())
    for step in range(args.warmup + args.steps):
        batch = next(batches)
        for name, (module, optimizer, bf16) in contenders.items():
            took, loss = train_step(module, optimizer, batch, bf16)
            losses[name].append(loss)
            if step >= args.warmup:
                seconds[name].append(took)

    print(
        f"{args.config}: {args.steps} training steps each (after {args.warmup} untimed), "
        f"batch {data.batch_size}, {args.threads} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    for name, median in medians.items():
        fastest = min(seconds[name])
        print(f"{name:>10}: {median * 1e3:7.1f} ms per step (median; fastest {fastest * 1e3:.1f})")
    print(f"bf16-mixed / fp32 speed: {medians['fp32'] / medians['bf16-mixed']:.2f}x (medians)")
    shown = range(0, len(losses["fp32"]), max(1, len(losses["fp32"]) // 6))
    print("answer loss    step: " + " ".join(f"{i:6d}" for i in shown))
    for name, values in losses.items():
        print(f"{name:>19}: " + " ".join(f"{values[i]:6.3f}" for i in shown))


if __name__ == "__main__":
    main()
