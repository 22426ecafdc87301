"""The clock, injectable so time-dependent code (expiry, staleness, retention) is testable.

Code that needs the time takes a :class:`Clock`; tests pass a :class:`FrozenClock` and move it.
"""

from __future__ import annotations

import datetime as dt
import time

from reconciler import errors

__all__ = ["Clock", "FrozenClock", "SystemClock", "parse_time"]


def parse_time(value: str, where: str | None = None) -> dt.datetime:
    """A time a user wrote (ISO 8601; without a zone: UTC). A ``ConfigError`` naming ``where``
    (an option, a field) for anything else."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        prefix = f"{where}: " if where else ""
        raise errors.ConfigError(f"{prefix}{value!r} is not an ISO 8601 time (e.g. 2026-11-22T10:00:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


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
