"""A stand-in for the OOM killer: SIGKILL the first worker process this process forks.

Real processes, a real signal: a watcher thread polls this process's children and kills the
first one it sees, as the kernel would pick a worker when memory runs out. Use it around code
that forks workers for long enough (a few hundred milliseconds) that the kill lands mid-work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["killing_first_worker"]


def _children() -> list[int]:
    """This process's forked children: its own program (not git or another command it runs)."""
    me = os.getpid()
    program = os.readlink("/proc/self/exe")
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        with contextlib.suppress(OSError):
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/exe") == program:
                        found.append(int(pid))
    return found


@contextlib.contextmanager
def killing_first_worker(timeout: float = 30.0) -> Iterator[list[int]]:
    """Yields a list that holds the killed worker's pid once it is killed."""
    killed: list[int] = []
    stop = threading.Event()
    before = set(_children())

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            new = [pid for pid in _children() if pid not in before]
            if new:
                # A command this process runs (git) is this program too until it execs, for a
                # moment: a worker is still this program a little later.
                time.sleep(0.02)
                workers = [pid for pid in _children() if pid in new]
                if workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(workers[0], signal.SIGKILL)
                        killed.append(workers[0])
                    return
                before.update(new)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join(5)
