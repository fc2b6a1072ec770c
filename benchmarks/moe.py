"""MoE layer forward+backward, side by side with transformers' OLMoE block and a dense MLP.

Compares, in one process and interleaved round by round (medians, so a noisy shared machine
hurts every contender alike):

* ``ours``: ``MoEFeedForward(backend=...)`` loaded from the OLMoE block (same weights; on CPU
  ``"auto"`` runs whichever of the next two it measures faster at the time),
  ``ours_workers``: the same with ``backend="workers"`` (each expert one task on
  single-threaded workers) and ``ours_grouped_mm`` with ``backend="grouped_mm"`` (torch's
  grouped GEMMs);
* ``hf_eager`` / ``hf_grouped_mm``: the transformers OLMoE block with
  ``config._experts_implementation`` set to "eager" / "grouped_mm";
* ``dense``: a SwiGLU MLP of the expert width over ``tokens * top_k`` rows, i.e. the same
  active FLOPs as the experts; ``dense / ours`` is the fraction of dense speed reached.

Each condition of ``--neighbours`` (default ``0 1``) runs the whole comparison with that many
busy neighbours beside it: processes that each keep one core busy with single-threaded
GEMMs, as another job or a data worker would. Every contender is warmed up in each condition
(``--warmup`` calls), and ``auto`` starts each condition afresh, as a run started in it would
(its choice settles after eight calls).

Run: ``python benchmarks/moe.py`` (defaults: 4096 tokens, hidden 512, expert width 512,
64 experts, top-2, fp32, 2 threads); an OLMoE-sized layer: ``--tokens 1024 --hidden 2048
--width 1024 --top-k 8 --eager-rounds 0``. ``--device cuda --dtype bfloat16`` runs the same on a GPU
(each timing synchronised with the device) and adds ``ours_triton``, the fused dispatch
kernels; ``--json FILE`` also writes the medians and ratios there. ``--threads 1 --cpu-time``
times the calling thread's CPU time instead of wall time: the work each contender does,
whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import timing
import torch
from transformers import OlmoeConfig
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock

from mm15_components.moe import adaptive
from mm15_components.moe.layer import MoEFeedForward, SwiGLUMLP


def _step(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        for parameter in module.parameters():
            parameter.grad = None
        x.grad = None
        module(x).backward(grad)

    return run


def _keep_busy(started: multiprocessing.Event, stop: multiprocessing.Event) -> None:
    """One core's worth of someone else's work: single-threaded GEMMs until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    started.set()
    while not stop.is_set():
        torch.mm(a, a)


@contextmanager
def busy_neighbours(count: int) -> Iterator[None]:
    """``count`` busy processes for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    started = [context.Event() for _ in range(count)]
    processes = [context.Process(target=_keep_busy, args=(s, stop)) for s in started]
    for process in processes:
        process.start()
    for event in started:
        event.wait()
    try:
        yield
    finally:
        stop.set()
        for process in processes:
            process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--eager-rounds", type=int, default=3, help="the eager loop is slow")
    parser.add_argument("--warmup", type=int, default=10, help="calls per contender")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--cpu-time", action="store_true", help="thread CPU time (--threads 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time counts the calling thread only: use it with --threads 1")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    clock = timing.clock(args.cpu_time, device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = OlmoeConfig(
        hidden_size=args.hidden,
        intermediate_size=args.width,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        norm_topk_prob=True,
    )
    block = OlmoeSparseMoeBlock(config)
    for parameter in block.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    block.to(device, dtype)
    ours = MoEFeedForward.from_hf(block, backend=args.backend)
    ours_grouped = MoEFeedForward.from_hf(block, backend="grouped_mm")
    ours_workers = MoEFeedForward.from_hf(block, backend="workers")
    dense = SwiGLUMLP(args.hidden, args.width).to(device, dtype)

    def randn(*shape: int, requires_grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=requires_grad)

    x = randn(1, args.tokens, args.hidden, requires_grad=True)
    grad = randn(1, args.tokens, args.hidden)
    dense_x = randn(args.tokens * args.top_k, args.hidden, requires_grad=True)
    dense_grad = randn(args.tokens * args.top_k, args.hidden)

    def hf(implementation: str) -> Callable[[], None]:
        run = _step(block, x, grad)

        def with_implementation() -> None:
            block.experts.config._experts_implementation = implementation
            run()

        return with_implementation

    with torch.no_grad():
        block.experts.config._experts_implementation = "grouped_mm"
        max_diff = (ours(x) - block(x)).abs().max().item()
    counts = ours.tokens_per_expert
    print(f"max |ours - transformers| on the forward: {max_diff:.2e}")
    print(f"tokens per expert: min {int(counts.min())}, max {int(counts.max())}")
    contenders = {
        "ours": _step(ours, x, grad),
        "ours_workers": _step(ours_workers, x, grad),
        "ours_grouped_mm": _step(ours_grouped, x, grad),
        "hf_grouped_mm": hf("grouped_mm"),
        "hf_eager": hf("eager"),
        "dense": _step(dense, dense_x, dense_grad),
    }
    if device.type == "cuda":
        del contenders["ours_workers"]
        contenders["ours_triton"] = _step(MoEFeedForward.from_hf(block, backend="triton"), x, grad)
    if args.eager_rounds == 0:
        del contenders["hf_eager"]
    print(
        f"tokens={args.tokens} hidden={args.hidden} width={args.width} experts={args.experts} "
        f"top_k={args.top_k} {args.dtype} {args.device} threads={args.threads} forward+backward, "
        f"{'thread CPU' if args.cpu_time else 'wall'} time, median of "
        f"{args.rounds} interleaved rounds ({args.eager_rounds} for hf_eager) after "
        f"{args.warmup} warm-up calls each"
    )
    results = {}
    for neighbours in args.neighbours:
        with busy_neighbours(neighbours):
            adaptive.choosers.clear()
            load_before = os.getloadavg()[0]
            for run in contenders.values():
                for _ in range(1 if run is contenders.get("hf_eager") else args.warmup):
                    run()
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for round_index in range(args.rounds):
                for name, run in contenders.items():
                    if name == "hf_eager" and round_index >= args.eager_rounds:
                        continue
                    start = clock()
                    run()
                    times[name].append((clock() - start) * 1e3)
            load_after = os.getloadavg()[0]
        median = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"{neighbours} busy neighbour(s), load average {load_before:.1f} before, "
            f"{load_after:.1f} after"
        )
        for name, value in median.items():
            print(f"  {name:16s} {value:9.1f} ms")
        ratios = {
            f"{name} / ours": median[name] / median["ours"]
            for name in median
            if name not in ("ours", "dense")
        }
        ratios["dense / ours"] = median["dense"] / median["ours"]
        for name, value in ratios.items():
            print(f"  {name:26s} {value:6.2f}x")
        results[neighbours] = {"load": [load_before, load_after], "median_ms": median, **ratios}
    if args.json:
        with open(args.json, "w") as file:
            summary = {"args": vars(args), "max_diff": max_diff, "results": results}
            json.dump(summary, file, indent=2)


if __name__ == "__main__":
    main()
