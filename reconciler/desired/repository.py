"""Git access for the fleet source: resolve refs, list commit trees, read blobs, never check out.

A fleet source is a local repository (bare or not) or a URL. URLs are mirrored into a cache
directory (``git clone --mirror`` once, ``git fetch`` after, each killed if the host does not
answer, each failure reported with git's own reason) and read from there, so a remote is read
exactly like a local repository, and a daemon keeps serving from its mirror while the remote is
down. Everything is read from the commit's tree pinned to a SHA: the working copy, if any, is
never looked at.

Reads run the ``git`` plumbing commands directly: ``rev-parse``, ``ls-tree`` and one pipelined
``cat-file --batch`` per call (measured: ~0.11 s for 10k blobs, twice as fast as GitPython's
object database, and without GitPython's ~30 ms import). ``loading`` uses this module; it knows
nothing of manifests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from reconciler import errors

__all__ = ["Commit", "Repository", "TreeEntry", "redact_url"]

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_CREDENTIALS_RE = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    authored_at: int  # seconds since the epoch
    summary: str


class TreeEntry(NamedTuple):
    """One entry of a commit tree (a named tuple: a fleet has thousands of them)."""

    path: str  # relative to the repository root, '/'-separated
    mode: str
    type: str  # blob | tree | commit (a submodule)
    sha: str
    size: int | None

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"


def redact_url(url: str) -> str:
    """``url`` without credentials, fit for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


class Repository:
    """One fleet repository, local or mirrored from a URL."""

    def __init__(self, location: str | os.PathLike[str], cache_dir: Path | None = None, *, clone: bool = True) -> None:
        """``clone=False`` leaves a missing mirror to the first :meth:`fetch`: a daemon serves
        what it applied before while the remote is down or does not answer."""
        self.location = str(location)
        self._commits: dict[str, Commit] = {}
        self._network: subprocess.Popen[bytes] | None = None  # a clone or fetch in flight
        self._cancelled = False
        path = Path(self.location).expanduser()
        if path.exists():
            self._path = path
            self.is_remote = False
        elif _looks_like_url(self.location):
            if cache_dir is None:
                raise errors.ConfigError(f"a cache directory is needed to mirror {redact_url(self.location)}")
            key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            self._path = cache_dir / "mirrors" / key
            self.is_remote = True
            if clone:
                self._ensure_mirror()
        else:
            raise errors.SourceError(f"repository {self.location!r} does not exist and is not a URL")
        if self.mirrored and self._git("rev-parse", "--git-dir", check=False) is None:
            raise errors.SourceError(f"{self.display} is not a Git repository")

    @property
    def display(self) -> str:
        return redact_url(self.location)

    # ------------------------------------------------------------------ remote mirrors

    @property
    def mirrored(self) -> bool:
        """A local repository, or a remote whose mirror is on disk."""
        return not self.is_remote or (self._path / "HEAD").exists()

    def _ensure_mirror(self) -> None:
        if self.mirrored:
            return
        tmp = self._path.with_name(self._path.name + ".partial")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)  # what an interrupted clone left
        except OSError as exc:
            raise errors.SourceError(f"cannot mirror {self.display} into {self._path.parent}: {exc.strerror or exc}") from exc
        self._network_git("clone", ["clone", "--mirror", "--quiet", "--", self.location, str(tmp)])
        tmp.rename(self._path)

    def fetch(self) -> None:
        """Bring a mirrored remote up to date (cloning it first if it is not on disk yet); a local
        repository is always current."""
        if not self.is_remote:
            return
        if not self.mirrored:
            self._ensure_mirror()
            return
        self._network_git("fetch", ["-C", str(self._path), "fetch", "--quiet", "--prune", "origin"])

    def cancel(self) -> None:
        """Kill a clone or fetch in flight (a host that does not answer), and refuse new ones:
        the reconcile waiting on it fails at once with a :class:`errors.SourceError`."""
        self._cancelled = True
        proc = self._network
        if proc is not None and proc.poll() is None:
            _kill_group(proc)

    def _network_git(self, verb: str, args: list[str]) -> None:
        """Run a git command that talks to the remote; its stderr's reason becomes the error.

        A host that accepts the connection and never answers must not hold a poll forever: the
        command is killed after ``_FETCH_SECONDS`` (or at once by :meth:`cancel`).
        """
        if self._cancelled:
            raise errors.SourceError(f"cannot {verb} {self.display}: stopping")
        # Its own process group: git runs the transport (git-remote-http, ssh) as a child that
        # holds the pipe open, so a kill must reach the whole group.
        proc = subprocess.Popen(
            ["git", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_git_env(),
            start_new_session=True,
        )
        self._network = proc
        try:
            _, stderr = proc.communicate(timeout=_FETCH_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise errors.SourceError(f"cannot {verb} {self.display}: no answer within {_FETCH_SECONDS:g} s") from None
        finally:
            self._network = None
        if proc.returncode != 0:
            reason = "stopped" if self._cancelled else _reason(stderr.decode("utf-8", "replace"))
            raise errors.SourceError(f"cannot {verb} {self.display}: {reason}")

    # ------------------------------------------------------------------ reading

    def _git(self, *args: str, check: bool = True) -> bytes | None:
        proc = subprocess.run(["git", "-C", str(self._path), *args], capture_output=True, env=_git_env(), check=False)
        if proc.returncode != 0:
            if check:
                raise errors.SourceError(
                    f"git {args[0]} failed in {self.display}: {_last_line(proc.stderr.decode(errors='replace'))}"
                )
            return None
        return proc.stdout

    def resolve(self, ref: str) -> Commit:
        """The commit ``ref`` (branch, tag, SHA, ``origin/main`` ...) names, with its author."""
        if not ref or ref.startswith("-") or any(c in ref for c in "\0\n "):
            raise errors.SourceError(f"{ref!r} is not a valid Git ref")
        if not self.mirrored:
            raise errors.SourceError(f"{self.display} has not been mirrored yet (no fetch has succeeded)")
        out = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
        if not out:
            raise errors.SourceError(f"ref {ref!r} not found in {self.display}")
        sha = out.decode().strip()
        known = self._commits.get(sha)
        if known is not None:
            return known  # a commit never changes: a daemon polling an unchanged branch pays one git call
        meta = self._git("show", "-s", "--no-show-signature", "--format=%an%x00%ae%x00%at%x00%s", sha)
        assert meta is not None
        name, email, at, summary = meta.decode("utf-8", "replace").rstrip("\n").split("\0", 3)
        commit = Commit(sha=sha, author_name=name, author_email=email, authored_at=int(at), summary=summary)
        if len(self._commits) >= 1024:
            self._commits.clear()
        self._commits[sha] = commit
        return commit

    def list_tree(self, sha: str, path: str) -> list[TreeEntry]:
        """Every entry under ``path`` (recursively) in the tree of commit ``sha``.

        ``path`` must name a directory of that tree; ``""`` is the root.
        """
        if not _SHA_RE.match(sha):
            raise errors.SourceError(f"{sha!r} is not a full commit SHA")
        path = path.strip("/")
        if path:
            kind = self._git("cat-file", "-t", f"{sha}:{path}", check=False)
            if kind is None:
                raise errors.SourceError(f"path {path!r} does not exist in commit {sha[:12]} of {self.display}")
            if kind.strip() != b"tree":
                raise errors.SourceError(f"path {path!r} in commit {sha[:12]} is a {kind.decode().strip()}, not a directory")
        args = ["ls-tree", "-r", "-l", "-z", "--full-tree", sha]
        if path:
            args += ["--", path + "/"]
        out = self._git(*args)
        assert out is not None
        entries = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, otype, osha, size = meta.decode().split(None, 3)
            entries.append(
                TreeEntry(
                    path=name.decode("utf-8", "surrogateescape"),
                    mode=mode,
                    type=otype,
                    sha=osha,
                    size=None if size.strip() == "-" else int(size),
                )
            )
        return entries

    def changed(self, old: str, new: str, path: str) -> list[TreeEntry] | None:
        """Entries under ``path`` that differ between two commits (deleted ones with type
        "deleted"), with blob sizes; None when ``old`` is not in this repository any more."""
        path = path.strip("/")
        args = ["diff-tree", "-r", "-z", "--no-renames", "--raw", old, new]
        if path:
            args += ["--", path + "/"]
        out = self._git(*args, check=False)
        if out is None:
            return None
        fields = out.split(b"\0")
        changes: list[TreeEntry] = []
        for i in range(0, len(fields) - 1, 2):
            meta, name = fields[i].decode(), fields[i + 1].decode("utf-8", "surrogateescape")
            _, new_mode, _, new_sha, status = meta.lstrip(":").split()
            if status == "D":
                changes.append(TreeEntry(name, "000000", "deleted", "", None))
            else:
                kind = "commit" if new_mode == "160000" else "blob"
                changes.append(TreeEntry(name, new_mode, kind, new_sha, None))
        sizes = self._sizes([c.sha for c in changes if c.type == "blob"])
        return [c._replace(size=sizes.get(c.sha)) if c.type == "blob" else c for c in changes]

    def _sizes(self, shas: list[str]) -> dict[str, int]:
        if not shas:
            return {}
        proc = subprocess.run(
            ["git", "-C", str(self._path), "cat-file", "--batch-check"],
            input="".join(s + "\n" for s in shas).encode(),
            capture_output=True,
            check=False,
        )
        sizes = {}
        for line in proc.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 3:
                sizes[parts[0]] = int(parts[2])
        return sizes

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """The content of each blob, through one pipelined ``git cat-file --batch``."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        proc = subprocess.Popen(
            ["git", "-C", str(self._path), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def feed() -> None:
            try:
                stdin.write("".join(s + "\n" for s in wanted).encode())
            finally:
                stdin.close()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        result: dict[str, bytes] = {}
        try:
            for sha in wanted:
                header = proc.stdout.readline().split()
                if len(header) != 3 or header[0].decode() != sha:
                    raise errors.SourceError(f"blob {sha} cannot be read from {self.display}")
                size = int(header[2])
                result[sha] = proc.stdout.read(size)
                proc.stdout.read(1)
        finally:
            writer.join()
            proc.stdout.close()
            proc.wait()
        return result


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _looks_like_url(location: str) -> bool:
    return "://" in location or re.match(r"^[\w.-]+@[\w.-]+:", location) is not None


#: Longest a fetch may take before it is killed and reported as a SourceError.
_FETCH_SECONDS = 120.0


def _git_env() -> dict[str, str]:
    # HTTP transfers slower than 1 kB/s for 30 s are abandoned by git itself.
    return {
        **os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": "30",
    }  # fmt: skip


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return _CREDENTIALS_RE.sub(r"\1***@", lines[-1]) if lines else "no output"


def _reason(stderr: str) -> str:
    """Git's own reason from a failed command's stderr: its ``fatal:`` (or ``error:``) lines,
    not the last line, which is often a hint or a blank."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-1:]
    text = "; ".join(dict.fromkeys(reasons)) or "git gave no reason"
    return _CREDENTIALS_RE.sub(r"\1***@", text)
