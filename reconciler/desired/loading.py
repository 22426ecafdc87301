"""Loading a commit: Git tree → parsed summaries → objects → checked snapshot.

``load(repo, ref, path)`` resolves the ref to a SHA, lists the fleet path in that commit's tree,
refuses what must not be read (symlinks, submodules, oversized files, paths leaving the fleet
path), parses every ``*.yaml``/``*.yml`` through ``parsing`` — cached by blob SHA in a
``caching.ParseCache``, in several worker processes when many files changed — collects ``*.rego``
modules, resolves each object's tenant, hashes genomes (prompt files replaced by their content
hash) and runs ``checking``. Every problem is collected; the caller decides whether a snapshot
with problems is fatal (``Snapshot.raise_for_problems``). Rego compilation is checked one floor
up, by ``policy``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing
import posixpath
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

from reconciler import errors
from reconciler.desired import caching, checking, documents, genome, kinds, repository, snapshot, yamlloading

_T = TypeVar("_T")

__all__ = ["Limits", "load"]

log = logging.getLogger(__name__)

_MANIFEST_SUFFIXES = (".yaml", ".yml")
_REGO_SUFFIX = ".rego"
#: Below this many files to parse, worker processes cost more than they save.
_PARALLEL_FROM = 400
#: Up to this many changed files, a load reuses the previous snapshot for the rest.
_INCREMENTAL_UP_TO = 200


@dataclasses.dataclass(frozen=True)
class _Reuse:
    previous: snapshot.Snapshot
    changed: set[str]  # paths added, modified or deleted since the previous snapshot


@dataclasses.dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1024 * 1024


def load(
    repo: repository.Repository,
    ref: str,
    path: str = "fleet",
    *,
    cache: caching.ParseCache | None = None,
    limits: Limits | None = None,
    workers: int = 1,
    previous: snapshot.Snapshot | None = None,
) -> snapshot.Snapshot:
    """The desired state at ``ref``; problems are collected in ``Snapshot.problems``.

    ``workers`` > 1 parses in that many forked processes when many files are new; only pass it
    from a process that runs no other threads (forking copies held locks). ``previous``, a valid
    snapshot of an earlier commit of the same repository and path, lets the load take over what
    the files the new commit did not touch declared (``git diff-tree`` names the others): a
    commit that changes three files in a fleet of thousands costs three files, not thousands.
    """
    commit = repo.resolve(ref)
    root = path.strip("/")
    reuse: _Reuse | None = None
    entries: list[repository.TreeEntry] | None = None
    if previous is not None and previous.ok and previous.path == root and previous.tree:
        changes = repo.changed(previous.commit.sha, commit.sha, root)
        if changes is not None and len(changes) <= _INCREMENTAL_UP_TO:
            tree = dict(previous.tree)
            for change in changes:
                if change.type == "deleted":
                    tree.pop(change.path, None)
                else:
                    tree[change.path] = change
            entries = list(tree.values())
            reuse = _Reuse(previous, {c.path for c in changes})
    if entries is None:
        entries = repo.list_tree(commit.sha, root)
    cache = cache if cache is not None else caching.ParseCache()
    cache.start_generation(carry=reuse is not None)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # allocating many small objects is 3-5x slower with the GC rescanning them (measured)
    try:
        snap = _Loader(repo, root, entries, cache, limits or Limits(), workers, reuse).run(ref, commit)
    finally:
        if gc_was_enabled:
            gc.enable()
    cache.save()
    return snap


class _Loader:
    def __init__(
        self,
        repo: repository.Repository,
        root: str,
        entries: list[repository.TreeEntry],
        cache: caching.ParseCache,
        limits: Limits,
        workers: int,
        reuse: _Reuse | None = None,
    ) -> None:
        self.reuse = reuse
        self.repo = repo
        self.root = root
        self.cache = cache
        self.limits = limits
        self.workers = workers
        self.problems: list[errors.Problem] = []
        self.tree = {entry.path: entry for entry in entries}
        self.raw: dict[tuple[str, int], bytes] = {}
        self.fresh: dict[str, documents.ParsedFile] = {}  # parsed in this load, templates included
        self.genome_texts: dict[tuple[str, str], bytes] = {}  # canonical genomes hashed in this load
        self.prompt_blobs: dict[tuple[str, str], tuple[str | None, ...]] = {}
        self.prompt_paths: set[str] = set()  # every prompt file a version of this commit names

    def run(self, ref: str, commit: repository.Commit) -> snapshot.Snapshot:
        manifests, rego_files = self._select_files()
        parsed = self._all_parsed = self._parse(manifests)
        rego = self._read_rego(rego_files)
        located = len(self.problems)  # the parser's problems carry their field's line already
        objects = self._build_objects(parsed)
        prompt_hashes, genome_hashes = self._hash_genomes(objects)
        invalid = {name for _, result in parsed for name in result.invalid}
        self.problems.extend(checking.check_references(objects, invalid))
        self.problems[located:] = self._at_field_lines(self.problems[located:])
        return snapshot.Snapshot(
            source=self.repo.display,
            ref=ref,
            path=self.root,
            commit=commit,
            objects=objects,
            genome_hashes=genome_hashes,
            prompt_hashes=prompt_hashes,
            rego=rego,
            problems=self.problems,
            files=len(manifests) + len(rego_files),
            warnings=checking.warnings(objects),
            raw=self.raw,
            reread=self._reread,
            genome_texts=self.genome_texts,
            tree=self.tree,
            prompt_blobs=self.prompt_blobs,
            prompt_paths=self.prompt_paths,
        )

    # ---------------------------------------------------------------- files

    def _select_files(self) -> tuple[list[repository.TreeEntry], list[repository.TreeEntry]]:
        manifests: list[repository.TreeEntry] = []
        rego: list[repository.TreeEntry] = []
        for entry in self.tree.values():
            if entry.type == "commit":
                self.problems.append(errors.Problem(entry.path, message="submodules are not supported in a fleet path"))
                continue
            is_manifest = entry.path.endswith(_MANIFEST_SUFFIXES)
            if not (is_manifest or entry.path.endswith(_REGO_SUFFIX)):
                continue
            if self._readable(entry, "file"):
                (manifests if is_manifest else rego).append(entry)
        manifests.sort(key=lambda e: e.path)
        rego.sort(key=lambda e: e.path)
        return manifests, rego

    def _readable(self, entry: repository.TreeEntry, what: str) -> bool:
        """Whether ``entry`` may be read; records the reason when it may not."""
        parts = entry.path.split("/")
        if entry.path.startswith("/") or any(p in ("", ".", "..") for p in parts) or not _inside(entry.path, self.root):
            self.problems.append(errors.Problem(entry.path, message=f"{what} path escapes the fleet path"))
            return False
        if entry.is_symlink:
            self.problems.append(errors.Problem(entry.path, message=f"{what} is a symbolic link; links are not followed"))
            return False
        if entry.type != "blob":
            self.problems.append(errors.Problem(entry.path, message=f"{what} is a {entry.type}, not a file"))
            return False
        if entry.size is not None and entry.size > self.limits.max_file_bytes:
            self.problems.append(
                errors.Problem(
                    entry.path, message=f"{what} is {entry.size} bytes, above the limit of {self.limits.max_file_bytes}"
                )
            )
            return False
        return True

    def _parse(self, manifests: list[repository.TreeEntry]) -> list[tuple[repository.TreeEntry, documents.ParsedFile]]:
        results: dict[str, documents.ParsedFile] = {}
        missing: list[repository.TreeEntry] = []
        for entry in manifests:
            hit = self.cache.get(_file_key(entry))
            if hit is None:
                missing.append(entry)
            else:
                results[entry.path] = hit
        if missing:
            for entry, (parsed, encoded) in zip(missing, self._parse_blobs(missing), strict=True):
                self.cache.put(_file_key(entry), parsed.cacheable(), encoded)
                self.fresh[entry.path] = parsed
                results[entry.path] = parsed
                for index, data in parsed.raw.items():
                    self.raw[(entry.path, index)] = data
                if self.cache.keep_documents:
                    self.cache.put(_documents_key(entry.path, entry.sha), _documents_of(parsed))
        out = []
        for entry in manifests:
            parsed = results[entry.path]
            self.problems.extend(parsed.problems)
            out.append((entry, parsed))
        return out

    def _at_field_lines(self, problems: list[errors.Problem]) -> list[errors.Problem]:
        """Problems found on built objects (references, tenants, prompt files) carry their
        document's first line; point them at their field's line instead. Only the files with such
        problems are read again and composed, once each."""
        wanted = {p.file for p in problems if p.field and p.document is not None and p.file in self.tree}
        if not wanted:
            return problems
        blobs = self.repo.read_blobs(self.tree[path].sha for path in wanted)
        locators = {path: yamlloading.Locator(blobs[self.tree[path].sha].decode("utf-8", "replace")) for path in wanted}
        out = []
        for problem in problems:
            locator = locators.get(problem.file)
            if locator is not None and problem.field and problem.document is not None:
                line = locator.line(problem.document, _field_path(problem.field))
                if line is not None:
                    problem = dataclasses.replace(problem, line=line)
            out.append(problem)
        return out

    def _parse_blobs(self, entries: list[repository.TreeEntry]) -> list[tuple[documents.ParsedFile, caching.Encoded]]:
        blobs = self.repo.read_blobs(e.sha for e in entries)
        jobs = [(e.path, blobs[e.sha]) for e in entries]
        if self.workers > 1 and len(jobs) >= _PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
            return _forked_map(_parse_pair, jobs, self.workers)
        return [_parse_job(p, content) for p, content in jobs]

    def _reread(self, files: list[tuple[str, str]]) -> dict[tuple[str, int], snapshot.Document]:
        """The documents of (file, blob) pairs whose summaries came from the cache: from the
        cache's own entry of them when an earlier process needed them too (a pull-request plan
        applies every document of the base), else parsed again, on every core when many."""
        found: dict[tuple[str, int], snapshot.Document] = {}
        missing: list[tuple[str, str]] = []
        for path, blob in files:
            hit = self.cache.get(_documents_key(path, blob))
            if hit is None:
                missing.append((path, blob))
            else:
                found.update({(path, i): document for i, document in hit.items()})
        if not missing:
            return found
        blobs = self.repo.read_blobs(blob for _, blob in missing)
        jobs = [(path, blobs[blob]) for path, blob in missing]
        if self.workers > 1 and len(jobs) >= _PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
            parsed = _forked_map(_documents_pair, jobs, self.workers)
        else:
            parsed = [_documents_pair(job) for job in jobs]
        for (path, blob), documents_ in zip(missing, parsed, strict=True):
            self.cache.put(_documents_key(path, blob), documents_)
            found.update({(path, i): document for i, document in documents_.items()})
        self.cache.save()
        return found

    def _read_rego(self, rego_files: list[repository.TreeEntry]) -> dict[str, str]:
        blobs = self.repo.read_blobs(e.sha for e in rego_files)
        modules: dict[str, str] = {}
        for entry in rego_files:
            try:
                modules[entry.path] = blobs[entry.sha].decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problems.append(errors.Problem(entry.path, message=f"file is not UTF-8 (byte {exc.start})"))
        return modules

    # ---------------------------------------------------------------- objects

    def _build_objects(
        self, parsed: list[tuple[repository.TreeEntry, documents.ParsedFile]]
    ) -> dict[snapshot.Key, snapshot.Object]:
        tenants = [d.name for _, p in parsed for d in p.documents if d.kind == "Tenant"]
        default_tenant = tenants[0] if len(tenants) == 1 else None
        known = set(tenants)
        objects: dict[snapshot.Key, snapshot.Object] = {}
        reuse = self.reuse
        problems_before = len(self.problems)
        previous_tenants = sorted(k[2] for k in reuse.previous.objects if k[0] == "Tenant") if reuse else None
        if reuse is not None and previous_tenants == sorted(tenants):
            # The files the commit did not touch declare what they declared before.
            objects = {k: o for k, o in reuse.previous.objects.items() if o.origin.file not in reuse.changed}
            parsed = [(entry, result) for entry, result in parsed if entry.path in reuse.changed]
            reused = len(objects)
        else:
            reuse = None
        for entry, result in parsed:
            for doc in result.documents:
                origin = snapshot.Origin(entry.path, doc.number, doc.line, entry.sha)
                tenant = doc.name if doc.kind == "Tenant" else doc.tenant
                if tenant is None:
                    if default_tenant is None:
                        why = "the fleet declares no Tenant" if not tenants else f"the fleet has {len(tenants)} tenants"
                        self.problems.append(origin.problem("metadata.tenant", f"required because {why}"))
                        continue
                    tenant = default_tenant
                elif doc.kind != "Tenant" and tenant not in known:
                    self.problems.append(origin.problem("metadata.tenant", f"Tenant {tenant!r} does not exist"))
                    continue
                obj = snapshot.Object(doc.kind, tenant, doc.name, doc, origin)
                first = objects.get(obj.key)
                if first is not None and reuse is not None:
                    # Which declaration is "first" depends on path order: let a full load say.
                    self.reuse = None
                    del self.problems[problems_before:]
                    return self._build_objects(self._all_parsed)
                if first is not None:
                    self.problems.append(
                        origin.problem("metadata.name", f"duplicate {obj.kind} {obj.name!r} (first declared at {first.origin})")
                    )
                    continue
                objects[obj.key] = obj
        if reuse is not None and reused == len(objects):
            return objects  # nothing new: the previous order still holds
        order = {kind: i for i, kind in enumerate(kinds.KIND_NAMES)}
        return dict(sorted(objects.items(), key=lambda item: (order[item[0][0]], item[0][1], item[0][2])))

    # ---------------------------------------------------------------- genomes

    def _hash_genomes(
        self, objects: dict[snapshot.Key, snapshot.Object]
    ) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], str]]:
        versions = [o for o in objects.values() if o.kind == "AgentVersion"]
        prompt_hashes: dict[tuple[str, str], list[str]] = {}
        genome_hashes: dict[tuple[str, str], str] = {}
        reuse = self.reuse
        if reuse is not None and not reuse.changed & reuse.previous.prompt_paths:
            # No prompt file any version used changed: versions from untouched files keep their hashes.
            previous = reuse.previous
            fresh = []
            for obj in versions:
                name = (obj.tenant, obj.name)
                if obj.origin.file in reuse.changed or name not in previous.genome_hashes:
                    fresh.append(obj)
                    continue
                genome_hashes[name] = previous.genome_hashes[name]
                prompt_hashes[name] = previous.prompt_hashes[name]
                self.prompt_blobs[name] = previous.prompt_blobs[name]
            versions = fresh
            self.prompt_paths |= previous.prompt_paths
        prompt_blobs: dict[snapshot.Key, list[str | None]] = {}
        users: dict[str, list[tuple[snapshot.Object, int, str]]] = {}
        resolved: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}  # memo: many versions share files
        for obj in versions:
            blobs: list[str | None] = []
            for i, file in enumerate(obj.doc.prompts):
                found = resolved.get((obj.origin.file, file))
                if found is None:
                    found = resolved[(obj.origin.file, file)] = self._resolve_prompt(obj.origin.file, file)
                target, sha, problem = found
                self.prompt_paths.add(target)
                blobs.append(sha)
                if sha is not None:
                    users.setdefault(sha, []).append((obj, i, target))
                elif problem is not None:
                    self.problems.append(obj.origin.problem(f"spec.genome.prompts[{i}].file", problem))
            prompt_blobs[obj.key] = blobs
            self.prompt_blobs[(obj.tenant, obj.name)] = tuple(blobs)
        content = self._prompt_hashes(users)
        need_template: list[snapshot.Object] = []
        for obj in versions:
            blobs = prompt_blobs[obj.key]
            hashes = [content.get(b) if b else None for b in blobs]
            if any(h is None for h in hashes):
                continue  # a prompt problem is already recorded; no hash without every file
            key = f"g:{obj.origin.blob}:{obj.doc.number}:{','.join(b or '' for b in blobs)}"
            computed = self.cache.get(key)
            prompt_hashes[(obj.tenant, obj.name)] = [h for h in hashes if h is not None]
            if computed is None:
                need_template.append(obj)
                continue
            genome_hashes[(obj.tenant, obj.name)] = computed
        templates = self._templates(need_template)
        for obj in need_template:
            blobs = prompt_blobs[obj.key]
            text = genome.fill_template(templates[obj.key], prompt_hashes[(obj.tenant, obj.name)])
            computed = genome.sha256_of(text)
            self.genome_texts[(obj.tenant, obj.name)] = text
            self.cache.put(f"g:{obj.origin.blob}:{obj.doc.number}:{','.join(b or '' for b in blobs)}", computed)
            genome_hashes[(obj.tenant, obj.name)] = computed
        for obj in versions:
            computed = genome_hashes.get((obj.tenant, obj.name))
            stated = obj.doc.stated_hash
            if computed is not None and stated is not None and stated != computed:
                self.problems.append(
                    obj.origin.problem("spec.genomeHash", f"stated {stated} but the genome hashes to {computed}")
                )
        return prompt_hashes, genome_hashes

    def _resolve_prompt(self, manifest: str, file: str) -> tuple[str, str | None, str | None]:
        """(path, blob SHA or None, problem or None) of a prompt file named in ``manifest``."""
        target = posixpath.normpath(posixpath.join(posixpath.dirname(manifest), file))
        if file.startswith("/") or not _inside(target, self.root):
            return target, None, f"prompt file {file!r} escapes the fleet path"
        entry = self.tree.get(target)
        if entry is None:
            return target, None, f"prompt file {target!r} does not exist in this commit"
        if not self._readable(entry, "prompt file"):
            return target, None, None  # the file's own problem is recorded once, at the file
        return target, entry.sha, None

    def _templates(self, versions: list[snapshot.Object]) -> dict[snapshot.Key, tuple[str, ...]]:
        """Genome templates of ``versions``: from this load's parse, else by parsing again."""
        templates: dict[snapshot.Key, tuple[str, ...]] = {}
        stale: dict[str, repository.TreeEntry] = {}
        for obj in versions:
            if obj.origin.file not in self.fresh:
                stale[obj.origin.file] = self.tree[obj.origin.file]
        if stale:
            entries = list(stale.values())
            for entry, (parsed, _) in zip(entries, self._parse_blobs(entries), strict=True):
                self.fresh[entry.path] = parsed
        for obj in versions:
            doc = self.fresh[obj.origin.file].documents
            template = next(d.genome_template for d in doc if d.number == obj.doc.number)
            assert template is not None
            templates[obj.key] = template
        return templates

    def _prompt_hashes(self, users: dict[str, list[tuple[snapshot.Object, int, str]]]) -> dict[str, str]:
        hashes: dict[str, str] = {}
        missing = []
        for sha in users:
            hit = self.cache.get(f"p:{sha}")
            if hit is None:
                missing.append(sha)
            else:
                hashes[sha] = hit
        blobs = self.repo.read_blobs(missing)
        for sha in missing:
            data = blobs[sha]
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                for obj, i, target in users[sha]:
                    self.problems.append(
                        obj.origin.problem(
                            f"spec.genome.prompts[{i}].file", f"prompt file {target!r} is not UTF-8 (byte {exc.start})"
                        )
                    )
                continue
            hashes[sha] = genome.content_hash(data)
            self.cache.put(f"p:{sha}", hashes[sha])
        return hashes


def _forked_map(work: Callable[[Any], _T], jobs: list[Any], workers: int) -> list[_T]:
    """``work`` over ``jobs``, in order, in ``workers`` forked processes; should one die (the OOM
    killer, say), what it left is done here rather than waited for. Small chunks, consumed as
    they arrive: the parent unpickles results while the workers are still parsing."""
    out: list[_T] = []
    try:
        with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for result in pool.map(work, jobs, chunksize=16):
                out.append(result)
    except futures.BrokenExecutor:
        out.extend(work(job) for job in jobs[len(out) :])
    return out


def _parse_pair(job: tuple[str, bytes]) -> tuple[documents.ParsedFile, caching.Encoded]:
    return _parse_job(*job)


def _documents_pair(job: tuple[str, bytes]) -> dict[int, snapshot.Document]:
    return _documents_of(_parse_job(*job)[0])


def _documents_of(parsed: documents.ParsedFile) -> dict[int, snapshot.Document]:
    """A file's documents by index: each as JSON, and a version's genome template (what
    :meth:`snapshot.Snapshot.data` and :meth:`snapshot.Snapshot.genome_text` read again)."""
    templates = {d.number: d.genome_template for d in parsed.documents}
    return {i: snapshot.Document(data, templates.get(i)) for i, data in parsed.raw.items()}


def _parse_job(path: str, content: bytes) -> tuple[documents.ParsedFile, caching.Encoded]:
    """Parse one file and encode its cache entry (in a worker process when loading in parallel)."""
    from reconciler.desired import parsing

    parsed = parsing.parse_manifest_file(path, content)
    return parsed, caching.encode(parsed.cacheable())


def _file_key(entry: repository.TreeEntry) -> str:
    return f"y:{entry.path}:{entry.sha}"


def _documents_key(path: str, blob: str) -> str:
    return f"d:{path}:{blob}"


def _inside(path: str, root: str) -> bool:
    return not root or path == root or path.startswith(root + "/")


def _field_path(field: str) -> tuple[str | int, ...]:
    """``spec.genome.prompts[0].file`` → ``("spec", "genome", "prompts", 0, "file")``."""
    parts: list[str | int] = []
    for name in field.split("."):
        name, *indexes = name.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i.rstrip("]")) for i in indexes if i.rstrip("]").isdigit())
    return tuple(parts)
