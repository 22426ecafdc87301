"""Fixtures of the daemon tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.daemon import procs


@pytest.fixture
def daemons() -> Iterator[list[procs.Daemon]]:
    started: list[procs.Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop(signal.SIGKILL)
