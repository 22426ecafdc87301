"""The clock, injectable so time-dependent code (expiry, staleness, retention) is testable.

Code that needs the time takes a :class:`Clock`; tests pass a :class:`FrozenClock` and move it.
"""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["Clock", "FrozenClock", "SystemClock"]


class Clock:
    def now(self) -> dt.datetime:
        raise NotImplementedError

    def monotonic(self) -> float:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock(Clock):
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._mono = 0.0

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)
        self._mono += seconds
