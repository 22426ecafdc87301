"""Prometheus metrics kept in process: counters and histograms, rendered as exposition text.

The one metrics mechanism of the project: the decider times its decision writes here, the daemon
counts and times its reconciles, the server counts decisions and requests; ``server.health``
renders all of them on ``/metrics``. A few dozen lines instead of prometheus_client: the service
needs counters with labels and fixed-bucket histograms, nothing more.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter as _Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["Counter", "Histogram"]

#: Seconds: from a fast commit (~0.1 ms) to a cold reconcile of a large fleet (~10 s).
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Counter:
    """A counter with one or more labels; ``inc`` takes one value per label (a tuple for several).

    ``preset`` values are rendered even while zero, so a dashboard sees every series at once.
    """

    def __init__(self, name: str, help_: str, *labels: str, preset: Iterable[Any] = ()) -> None:
        self.name, self.help, self.labels = name, help_, labels
        self._lock = threading.Lock()
        self._counts: _Counter[Any] = _Counter({value: 0 for value in preset})

    def inc(self, value: Any, amount: int = 1) -> None:
        with self._lock:
            self._counts[value] += amount

    def get(self, value: Any) -> int:
        return self._counts[value]

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._counts.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in items:
            values = value if isinstance(value, tuple) else (value,)
            labels = ",".join(f'{label}="{v}"' for label, v in zip(self.labels, values, strict=True))
            lines.append(f"{self.name}{{{labels}}} {count}")
        return lines


class Histogram:
    """Observations in cumulative buckets, with their sum and count."""

    def __init__(self, name: str, help_: str, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.name, self.help = name, help_
        self.bounds = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        slot = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            self._counts[slot] += 1
            self.total += seconds
            self.count += 1

    def render(self) -> list[str]:
        with self._lock:
            counts, total, count = list(self._counts), self.total, self.count
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {count}', f"{self.name}_sum {total:.6f}", f"{self.name}_count {count}"]
        return lines
