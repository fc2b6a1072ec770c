"""CAbstractor forward+backward: all tiles of a batch in one call vs one call per image.

Both contenders run the same module on the same inputs and do the same work: every tile's
144 output tokens, one loss over all of them, one backward. Runs alternate contender by
contender so that load from other processes hits both alike. Prints output tokens/s
of the median run (with every run's seconds, to show the spread) and two ratios: of the
medians and of the fastest runs.

    python benchmarks/c_abstractor.py [--images 16 --tiles 5 --grid 27 --dim 256 --runs 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from timing import timed

from mm15_components.connectors.c_abstractor import CAbstractor

Contender = Callable[[CAbstractor, torch.Tensor], torch.Tensor]


def one_call(abstractor: CAbstractor, tiles: torch.Tensor) -> torch.Tensor:
    """``tiles [images, tiles, patches, dim]`` as one batch of images*tiles."""
    return abstractor(tiles.flatten(0, 1))


def per_image(abstractor: CAbstractor, tiles: torch.Tensor) -> torch.Tensor:
    """One call per image (its tiles together), outputs concatenated afterwards."""
    return torch.cat([abstractor(image_tiles) for image_tiles in tiles])


def step_seconds(
    contender: Contender, abstractor: CAbstractor, tiles: torch.Tensor, weights: torch.Tensor
) -> float:
    abstractor.zero_grad(set_to_none=True)
    return timed(lambda: (contender(abstractor, tiles) * weights).sum().backward())[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--tiles", type=int, default=5, help="tiles per image (overview included)")
    parser.add_argument("--grid", type=int, default=27, help="patches per side of one tile")
    parser.add_argument("--dim", type=int, default=256, help="in, hidden and out width")
    parser.add_argument("--queries", type=int, default=144)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    abstractor = CAbstractor(
        args.dim, args.dim, num_queries=args.queries, hidden_dim=args.dim, pos_grid=args.grid
    )
    tiles = torch.randn(args.images, args.tiles, args.grid * args.grid, args.dim)
    weights = torch.randn(args.images * args.tiles, args.queries, args.dim)
    contenders = {"one call": one_call, "per image": per_image}

    for contender in contenders.values():  # warm-up: allocator and kernel selection
        step_seconds(contender, abstractor, tiles, weights)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, contender in contenders.items():
            seconds[name].append(step_seconds(contender, abstractor, tiles, weights))

    tokens = args.images * args.tiles * args.queries
    print(
        f"{args.images} images x {args.tiles} tiles of {args.grid}x{args.grid} patches, "
        f"width {args.dim}, {args.queries} queries, {args.threads} threads, "
        f"forward+backward, median of {args.runs}"
    )
    rates = {name: tokens / statistics.median(times) for name, times in seconds.items()}
    for name, rate in rates.items():
        runs = ", ".join(f"{s:.1f}" for s in seconds[name])
        print(f"{name:>10}: {rate:9.0f} tokens/s   (runs: {runs} s)")
    print(f"one call / per image: {rates['one call'] / rates['per image']:.2f}x (medians)")
    best = min(seconds["per image"]) / min(seconds["one call"])
    print(f"one call / per image: {best:.2f}x (fastest runs; others' load only adds time)")


if __name__ == "__main__":
    main()
