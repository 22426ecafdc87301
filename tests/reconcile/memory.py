"""A fleet commit held in memory, for tests of the pure planner that need no Git and no database.

:class:`Files` answers what ``desired.loading`` asks a ``desired.repository.Repository`` (resolve a
ref, list a tree, read blobs), over a dict of path → text; blob SHAs are Git's own (``git
hash-object``), so the parse cache keys and digests are what a real commit of the same files
would give. A stand-in, not a mock: the planner table test runs the real loader, checker and
planner on it; every other reconcile test uses real Git repositories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from reconciler.desired import caching, loading, repository, snapshot

__all__ = ["Files", "snapshot_of"]


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class Files:
    def __init__(self, files: Mapping[str, str | bytes], *, sha: str = "1" * 40, author: str = "Alice Smith") -> None:
        self.blobs = {path: text.encode() if isinstance(text, str) else text for path, text in files.items()}
        self.commit = repository.Commit(sha, author, "alice@acme.example", 1_790_000_000, "a commit held in memory")
        self.display = "memory"

    def resolve(self, ref: str) -> repository.Commit:
        return self.commit

    def list_tree(self, sha: str, path: str) -> list[repository.TreeEntry]:
        root = path.strip("/") + "/"
        return [
            repository.TreeEntry(p, "100644", "blob", _blob_sha(data), len(data))
            for p, data in sorted(self.blobs.items())
            if p.startswith(root)
        ]

    def changed(self, old: str, new: str, path: str) -> list[repository.TreeEntry] | None:
        return None  # no history: every load reads the whole tree

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        by_sha = {_blob_sha(data): data for data in self.blobs.values()}
        return {sha: by_sha[sha] for sha in shas}


def snapshot_of(files: Mapping[str, str | bytes], path: str = "fleet") -> snapshot.Snapshot:
    """The desired state of ``files``; fails the test when the commit is invalid."""
    snap = loading.load(Files(files), "main", path, cache=caching.ParseCache())  # type: ignore[arg-type]
    assert not snap.problems, snap.problems
    return snap
