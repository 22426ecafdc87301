"""A content-addressed cache of parsed files, kept in memory and optionally on disk.

Keys are built from Git blob SHAs (content addresses), so an entry never goes stale: a file
that did not change between two commits costs nothing on the second. The daemon keeps one cache
for its lifetime; CLI commands persist it in the state directory so a second ``armctl validate``
of the same commit (or of a commit that changed three files) skips parsing entirely.

On disk the cache keeps two generations — what the last two loads used — so it stays the size of
a fleet and alternating between a base and a head commit (a pull-request plan) stays warm. It is
a pickle in a directory the user owns; it holds parse results only, never credentials.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ParseCache"]

log = logging.getLogger(__name__)

#: Bump when parsing or the models change what a cached entry means.
FORMAT = 1


class ParseCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._current: dict[str, Any] = {}  # entries the load under way used
        self._last: dict[str, Any] = {}  # entries the previous load used
        self._before: dict[str, Any] = {}  # entries the load before that used
        self.hits = 0
        self.misses = 0
        if directory is not None:
            self._read()

    @property
    def _file(self) -> Path | None:
        return None if self.directory is None else self.directory / f"parsed-v{FORMAT}.pickle"

    def _read(self) -> None:
        path = self._file
        assert path is not None
        try:
            with path.open("rb") as f:
                stored = pickle.load(f)
        except FileNotFoundError:
            return
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable parse cache %s: %s", path, exc)
            return
        if isinstance(stored, dict) and stored.get("format") == FORMAT:
            self._last = stored.get("last", {})
            self._before = stored.get("before", {})

    def get(self, key: str) -> Any | None:
        value = self._current.get(key)
        if value is None:
            value = self._last.get(key)
            if value is None:
                value = self._before.get(key)
            if value is not None:
                self._current[key] = value
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self._current[key] = value

    def start_generation(self) -> None:
        """Begin a load in a long-lived process: the last load's entries become older ones."""
        if self._current:
            self._before, self._last, self._current = self._last, self._current, {}

    def save(self) -> None:
        """Persist what this load and the previous one used, unless it is what is stored."""
        path = self._file
        if path is None or self._current.keys() == self._last.keys():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".parsed-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": FORMAT, "last": self._current, "before": self._last}, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write parse cache %s: %s", path, exc)
            Path(tmp).unlink(missing_ok=True)
