"""How the benchmarks time code: one clock and two ways to use it.

Wall time counts everything the call waits for, other processes on a shared machine
included; the calling thread's CPU time (``cpu_time=True``) counts only its own work, so it
is steadier under load but meaningless for multi-threaded or asynchronous work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def clock(cpu_time: bool = False, device: torch.device | None = None) -> Callable[[], float]:
    """Seconds now: wall time, or the calling thread's CPU time. On a CUDA ``device`` it first
    waits for the queued kernels, so a difference of two readings covers their run."""
    read = time.thread_time if cpu_time else time.perf_counter
    if device is None or device.type != "cuda":
        return read

    def synchronized() -> float:
        torch.cuda.synchronize(device)
        return read()

    return synchronized


def timed(call: Callable[[], T], now: Callable[[], float] = time.perf_counter) -> tuple[float, T]:
    """``(seconds, result)`` of one call."""
    start = now()
    result = call()
    return now() - start, result


def best_times(
    calls: Sequence[Callable[[], object]],
    repeats: int,
    now: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Fastest of ``repeats`` runs of each call; each round runs every call once, in turn, so
    a load spike from elsewhere hits all of them alike."""
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for slot, call in enumerate(calls):
            best[slot] = min(best[slot], timed(call, now)[0])
    return best
