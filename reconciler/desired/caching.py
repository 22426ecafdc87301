"""A content-addressed cache of parse results, in memory and optionally on disk.

Keys are built from Git blob SHAs (content addresses), so an entry never goes stale: a file
that did not change between two commits costs nothing on the second. The daemon keeps one cache
for its lifetime; CLI commands persist it in the state directory so a second ``armctl validate``
of the same commit, or of a commit that changed three files, parses nothing it parsed before.

Entries are kept encoded (a pickle per entry, strings as they are) until they are used, so
loading the file is one large read and writing it re-encodes only what is new. On disk the
cache keeps two generations — what the last two loads used, counting a load built on the one
before it (a head on top of its base) as part of that one's generation, until the generation
doubles — so it stays within a few times the size of a fleet and alternating between a base and
a head commit (a pull-request plan) stays warm. It is a pickle in
a directory the user owns, holding parse results only, never credentials; it is read by an
unpickler that admits the parse results' own classes and nothing else, so a cache file from
elsewhere (a CI cache another job wrote) cannot run code. It can still say what it likes about
the files it names: restore a cache only from jobs you trust as you trust their checkout.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "ParseCache"]

log = logging.getLogger(__name__)

#: Bump when parsing or the models change what a cached entry means.
FORMAT = 12

Encoded = bytes | str


def encode(value: Any) -> Encoded:
    return value if type(value) is str else pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(encoded: Encoded) -> Any:
    if isinstance(encoded, str):
        return encoded
    return _Unpickler(io.BytesIO(encoded)).load()


#: Everything a cache entry may name: the functions that rebuild parse results (each class
#: pickles through one: ``documents.Document.__reduce__``, say). No class and no builtin, so a
#: cache restored from somewhere else (a CI cache another job wrote) can neither run code nor
#: change a class when it is read: an entry naming anything else is refused and parsed again.
_ALLOWED = frozenset(
    {
        ("reconciler.desired.documents", "_new_document"),
        ("reconciler.desired.documents", "_new_parsed_file"),
        ("reconciler.desired.snapshot", "_new_document"),
        ("reconciler.errors", "_new_problem"),
    }
)


class _Only:
    """A rebuilding function as the unpickler hands it out: it can be called, not changed."""

    __slots__ = ("_make",)
    _make: Any

    def __init__(self, make: Any) -> None:
        object.__setattr__(self, "_make", make)

    def __call__(self, *args: Any) -> Any:
        return self._make(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("the parse cache may not change what it is read with")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the parse cache may not change what it is read with")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _Only(super().find_class(module, name))
        raise pickle.UnpicklingError(f"the parse cache may not hold {module}.{name}")


def _generation(stored: Any) -> bool:
    return isinstance(stored, dict) and all(type(k) is str and type(v) in (bytes, str) for k, v in stored.items())


class ParseCache:
    def __init__(self, directory: Path | None = None, *, keep_documents: bool = False) -> None:
        self.directory = directory
        #: keep the documents of freshly parsed files too, not only when a load reads them again:
        #: for a process that will need every document (a pull-request plan applies the base)
        self.keep_documents = keep_documents
        self._current: dict[str, Any] = {}  # decoded entries the load under way used
        self._current_encoded: dict[str, Encoded] = {}
        self._last: dict[str, Any] = {}  # decoded entries of the previous load (long-lived process)
        self._stored_last: dict[str, Encoded] = {}  # encoded, as read from disk or kept
        self._stored_before: dict[str, Encoded] = {}
        self.hits = 0
        self.misses = 0
        self._added = False
        self._unwritable = False  # said once: a directory this process cannot write to stays so
        self._carried_from: int | None = None  # the generation's size when a load first carried it on
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
                stored = _Unpickler(f).load()
        except FileNotFoundError:
            return
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable parse cache %s: %s", path, exc)
            return
        if not (isinstance(stored, dict) and stored.get("format") == FORMAT):
            return
        last, before = stored.get("last", {}), stored.get("before", {})
        if not (_generation(last) and _generation(before)):
            log.warning("ignoring unreadable parse cache %s: not laid out as this version writes it", path)
            return
        self._stored_last, self._stored_before = last, before

    def get(self, key: str) -> Any | None:
        value = self._current.get(key)
        if value is not None:
            self.hits += 1
            return value
        value = self._last.get(key)
        encoded = self._stored_last.get(key) or self._stored_before.get(key)
        if value is None and encoded is not None:
            try:
                value = _decode(encoded)
            except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError, IndexError):
                value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._current[key] = value
        self._current_encoded[key] = encoded if encoded is not None else encode(value)
        return value

    def put(self, key: str, value: Any, encoded: Encoded | None = None) -> None:
        """Remember ``value``; pass ``encoded`` when it was already pickled (by a worker)."""
        self._current[key] = value
        self._current_encoded[key] = encoded if encoded is not None else encode(value)
        self._added = True

    def start_generation(self, *, carry: bool = False) -> None:
        """Begin a load: the last load's entries become older ones.

        A load that builds on an earlier snapshot of this process (``carry``) takes most of what
        the files its commit did not touch declared from that snapshot (their genome and prompt
        hashes, say) without asking the cache: it adds to the generation under way instead, so what is saved still holds every
        entry the fleet needs (a pull-request plan loads the base, then the head on top of it).
        A generation that has doubled since its first load starts over all the same, so a
        long-lived process's cache stays the size of a fleet."""
        if carry and self._current:
            if self._carried_from is None:
                self._carried_from = len(self._current)
            if len(self._current) <= 2 * self._carried_from:
                return
        self._carried_from = None
        if self._current:
            self._stored_before = self._stored_last
            self._stored_last = self._current_encoded
            self._last = self._current
            self._current = {}
            self._current_encoded = {}

    def save(self) -> None:
        """Persist what this load and the previous one used, if this load added anything.

        A load that only hit the cache found everything on disk already, so nothing is written.
        """
        path = self._file
        if path is None or not self._added or self._unwritable:
            return
        previous = self._stored_last if self._current_encoded is not self._stored_last else self._stored_before
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".parsed-", suffix=".tmp")
        except OSError as exc:  # the cache only saves time: a state directory that cannot be written loses nothing
            log.warning("cannot write parse cache %s: %s", path, exc)
            self._unwritable = True
            return
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(
                    {"format": FORMAT, "last": self._current_encoded, "before": previous},
                    f,
                    protocol=pickle.HIGHEST_PROTOCOL,
                )
            os.replace(tmp, path)
            self._added = False
        except OSError as exc:
            log.warning("cannot write parse cache %s: %s", path, exc)
            Path(tmp).unlink(missing_ok=True)
