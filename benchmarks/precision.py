"""Training steps of a recipe's model on CPU: fp32 against bf16 autocast (``bf16-mixed``).

Two copies of the recipe's model start from the same weights and train on the same batches,
one in fp32 and one under ``torch.autocast("cpu", torch.bfloat16)`` (what Lightning's
``precision: bf16-mixed`` does; weights and optimizer state stay fp32). Steps alternate
between the two, so load from other processes hits both alike. Prints the median step time of
each, their ratio, and the answer loss of both copies along the way: bf16 is only worth it
where the losses track. A third copy runs bf16 with torch's own attention kernel choice (the
fused CPU kernel, ``MM15Model(cpu_bf16_attention="torch")``) instead of the math path
``MM15Model`` takes in CPU bf16 by default.

    python benchmarks/precision.py [--config recipes/quickstart.yaml --steps 40 --threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
from collections.abc import Callable

import torch
from timing import timed

from mm15_components.cli import build_from_config
from mm15_components.module import MM15Module

Precision = Callable[[], contextlib.AbstractContextManager]


def bf16() -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", torch.bfloat16)


def train_step(
    module: MM15Module, optimizer: torch.optim.Optimizer, batch, precision: Precision
) -> tuple[float, float]:
    """One optimizer step on the mean answer-token loss; returns (seconds, loss)."""

    def step() -> torch.Tensor:
        with precision():
            loss_sum, count, _ = module.answer_loss(batch)
        loss = loss_sum / count.clamp(min=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    seconds, loss = timed(step)
    return seconds, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    module, data = build_from_config(args.config)
    module.configure_model()
    data.setup("fit")
    # name -> (autocast, MM15Model.cpu_bf16_attention)
    precisions: dict[str, tuple[Precision, str]] = {
        "fp32": (contextlib.nullcontext, "math"),
        "bf16-mixed": (bf16, "math"),
        "bf16, fused attention": (bf16, "torch"),
    }
    contenders = {}
    for name, (precision, attention) in precisions.items():
        copied = copy.deepcopy(module)
        copied.model.cpu_bf16_attention = attention
        contenders[name] = (copied, torch.optim.AdamW(copied.parameters(), lr=args.lr), precision)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    losses: dict[str, list[float]] = {name: [] for name in contenders}
    batches = iter(data.train_dataloader())
    for step in range(args.warmup + args.steps):
        batch = next(batches)
        for name, (copied, optimizer, precision) in contenders.items():
            took, loss = train_step(copied, optimizer, batch, precision)
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
        print(
            f"{name:>21}: {median * 1e3:7.1f} ms per step (median; fastest {fastest * 1e3:.1f}), "
            f"speed {medians['fp32'] / median:.2f}x fp32"
        )
    shown = range(0, len(losses["fp32"]), max(1, len(losses["fp32"]) // 6))
    print(f"{'answer loss at step':>21}: " + " ".join(f"{i:6d}" for i in shown))
    for name, values in losses.items():
        print(f"{name:>21}: " + " ".join(f"{values[i]:6.3f}" for i in shown))


if __name__ == "__main__":
    main()
