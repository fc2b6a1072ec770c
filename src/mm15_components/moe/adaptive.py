"""Which CPU expert path is faster here and now, measured on the calls themselves.

On CPU the experts run either as whole-batch grouped GEMMs (one OpenMP region per expert and
GEMM, all threads on one expert at a time) or as per-expert tasks on single-threaded workers
(``workers.py``). Which is faster depends on the shapes and on what else the machine runs:
the tasks win on an idle machine and at small widths under heavy load, where every OpenMP
barrier waits for a descheduled thread, while the grouped GEMMs win for wide experts beside
a busy neighbour (docs/moe.md gives the measurements). No fixed rule covers both, so
``backend="auto"`` times the calls it makes: each call site (direction, shapes, dtype, size
class of the row count) first runs each path ``FIRST_RUNS`` times, alternating, then uses
the one with the lower moving average of its recent times, and now and then runs the other
once so that a change of conditions is noticed: after ``EXPLORE_EVERY`` times the ratio of
the two averages calls, which bounds what the check costs to ``1 / EXPLORE_EVERY`` of the
time. A path's first call is not counted (it starts the worker threads and touches fresh
memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

GROUPED = 0
"""``workers`` value for the whole-batch grouped GEMMs."""
ALL_THREADS = -1
"""``workers`` value for the per-expert tasks, one worker per intra-op thread."""
MEASURED = -2
"""``workers`` value for whichever of the two ``run_faster`` picks at the call site."""
PATHS = (GROUPED, ALL_THREADS)
FIRST_RUNS = 4
"""Runs of each path before choosing: the first is not counted, the others average out some
of a shared machine's noise."""
EXPLORE_EVERY = 16
SMOOTHING = 0.3
"""Weight of the newest time in a path's moving average."""

Result = TypeVar("Result")


@dataclass
class PathChooser:
    """Moving averages of both paths' times at one call site, and the choice they imply."""

    seconds: dict[int, float] = field(default_factory=dict)
    runs: dict[int, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    since_check: int = 0

    @property
    def faster(self) -> int | None:
        """The path with the lower moving average, once both have run ``FIRST_RUNS`` times."""
        if min(self.runs.values()) < FIRST_RUNS:
            return None
        return min(PATHS, key=self.seconds.__getitem__)

    def next_path(self) -> int:
        """The path to run now: an unmeasured one first, else the faster one, and the slower
        one after ``EXPLORE_EVERY`` x (slower / faster) calls since it last ran."""
        faster = self.faster
        if faster is None:
            return min(PATHS, key=self.runs.__getitem__)
        slower = next(path for path in PATHS if path != faster)
        self.since_check += 1
        ratio = self.seconds[slower] / max(self.seconds[faster], 1e-9)
        if self.since_check >= EXPLORE_EVERY * ratio:
            self.since_check = 0
            return slower
        return faster

    def record(self, path: int, seconds: float) -> None:
        """Add one run's wall time (the first run of a path is not counted)."""
        self.runs[path] += 1
        if self.runs[path] == 1:
            return
        previous = self.seconds.get(path)
        self.seconds[path] = (
            seconds if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * seconds
        )


choosers: dict[Hashable, PathChooser] = {}
"""One chooser per call site, kept for the life of the process."""


def run_faster(site: Hashable, run: Callable[[int], Result]) -> Result:
    """``run(workers)`` on the path chosen for ``site``, timed for the next choice."""
    chooser = choosers.setdefault(site, PathChooser())
    path = chooser.next_path()
    start = time.perf_counter()
    result = run(path)
    chooser.record(path, time.perf_counter() - start)
    return result
