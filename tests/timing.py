"""Timing assertions that hold on a busy host.

A test that asserts wall-clock time fails CI when another process takes the core for a moment,
not when the code got slower. :func:`fastest` runs the timed work a few times and keeps the
quickest: load only ever adds time, so the fastest run is the one that measures the code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["fastest", "fastest_pair"]

T = TypeVar("T")


def fastest(work: Callable[[], T], runs: int = 3) -> tuple[T, float]:
    """``work()``'s result and the quickest of ``runs`` timings of it, in seconds."""
    best = float("inf")
    result: T
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return result, best


def fastest_pair(first: Callable[[], object], second: Callable[[], object], runs: int = 5) -> tuple[float, float]:
    """The quickest timings of two pieces of work, measured in turns (first, second, first, ...),
    so that a busy moment of the host slows both alike: for asserting a ratio of the two."""
    best = [float("inf"), float("inf")]
    for _ in range(runs):
        for slot, work in enumerate((first, second)):
            started = time.perf_counter()
            work()
            best[slot] = min(best[slot], time.perf_counter() - started)
    return best[0], best[1]
