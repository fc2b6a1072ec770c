"""CPU worker threads that run one expert at a time, each with a single intra-op thread.

Why: torch's CPU GEMMs parallelise *inside* each call, so per-expert GEMMs cost one OpenMP
parallel region (and barrier) per expert and per GEMM: 384 per MoE step for 64 experts. On a
machine whose cores are shared with other processes each barrier waits for a descheduled
thread, and the step becomes several times slower. Here each worker takes whole experts
from a shared queue (largest first) and computes them with single-threaded kernels: no
barrier between experts, a slow worker simply takes fewer experts, nothing is padded, and an
expert's intermediate rows stay in the core's cache.
"""

from __future__ import annotations

import ctypes
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait

import torch
from torch import Tensor

_MADV_HUGEPAGE = 14
_HUGE_PAGE_MIN_BYTES = 4 << 20
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_pools: dict[int, queue.SimpleQueue] = {}
_pools_lock = threading.Lock()


def _serve(tasks: queue.SimpleQueue, ready: threading.Barrier) -> None:
    torch.get_num_threads()  # take the process defaults first, so they cannot override below
    torch.set_num_threads(1)  # this thread's OpenMP and MKL settings
    ready.wait()
    while True:
        job, future = tasks.get()
        try:
            future.set_result(job())
        except BaseException as error:  # handed to the caller, which re-raises it
            future.set_exception(error)


def _pool(size: int) -> queue.SimpleQueue:
    """The task queue of ``size`` daemon threads, started on first use."""
    with _pools_lock:
        if size not in _pools:
            main_threads = torch.get_num_threads()
            tasks: queue.SimpleQueue = queue.SimpleQueue()
            ready = threading.Barrier(size + 1)
            for _ in range(size):
                threading.Thread(target=_serve, args=(tasks, ready), daemon=True).start()
            ready.wait()
            # set_num_threads also stores a process-wide default for threads started later;
            # restore the caller's.
            torch.set_num_threads(main_threads)
            _pools[size] = tasks
        return _pools[size]


os.register_at_fork(after_in_child=_pools.clear)  # threads do not survive a fork


def for_each_expert(
    work: Callable[[int, int, int], None], offsets: Sequence[int], workers: int
) -> None:
    """Call ``work(expert, start, end)`` for every expert with rows, without autograd.

    ``offsets[e]`` is the end row of expert ``e``. ``workers`` threads share the experts,
    largest first; ``1`` runs in the calling thread, a negative count means one worker per
    intra-op thread (``torch.get_num_threads()``). ``work`` must
    write only to its own expert's rows and slices.
    """
    starts = [0, *offsets[:-1]]
    jobs = sorted(
        ((e, s, t) for e, (s, t) in enumerate(zip(starts, offsets, strict=True)) if t > s),
        key=lambda job: job[1] - job[2],
    )
    if workers < 0:
        workers = torch.get_num_threads()
    if workers <= 1:
        with torch.no_grad():
            for job in jobs:
                work(*job)
        return
    pending = deque(jobs)

    def drain() -> None:
        with torch.no_grad():
            while True:
                try:
                    job = pending.popleft()  # atomic: workers never take the same expert
                except IndexError:
                    return
                work(*job)

    tasks = _pool(workers)
    futures = [Future() for _ in range(workers)]
    for future in futures:
        tasks.put((drain, future))
    wait(futures)  # all workers stop before any error is raised
    for future in futures:
        future.result()


def empty_buffer(like: Tensor, *size: int) -> Tensor:
    """``like.new_empty(size)``; on Linux CPU, large buffers ask for 2 MB pages.

    Why: a fresh multi-MB buffer is new memory from the OS, and its first write costs one page
    fault per 4 KB page: about 20% of a CPU MoE step (weight gradients alone are ~200 MB).
    With transparent huge pages in "madvise" mode one fault maps 2 MB. Harmless where the
    kernel declines.
    """
    buffer = like.new_empty(size)
    if _libc is not None and buffer.device.type == "cpu" and buffer.nbytes >= _HUGE_PAGE_MIN_BYTES:
        start = buffer.data_ptr() & ~4095  # madvise wants a page-aligned start
        length = buffer.data_ptr() + buffer.nbytes - start
        _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_HUGEPAGE)
    return buffer
