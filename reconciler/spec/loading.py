"""Loading a commit: Git tree → parsed manifests → typed objects → checked snapshot.

``load(repo, ref, path)`` resolves the ref to a SHA, lists the fleet path in that commit's tree,
refuses what must not be read (symlinks, submodules, oversized files, paths leaving the fleet
path), parses every ``*.yaml``/``*.yml`` through ``parsing`` (cached by blob SHA in a
``caching.ParseCache``), collects ``*.rego`` modules, resolves each object's tenant, hashes
genomes (prompt files replaced by their content hash) and runs ``checking``. Every problem is
collected; the caller decides whether a snapshot with problems is fatal
(``Snapshot.raise_for_problems``). Rego compilation is checked one floor up, by ``policy``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import posixpath
from typing import Any

from reconciler import errors
from reconciler.spec import caching, checking, genome, models, parsing, repository, snapshot

__all__ = ["Limits", "load"]

log = logging.getLogger(__name__)

_MANIFEST_SUFFIXES = (".yaml", ".yml")
_REGO_SUFFIX = ".rego"


@dataclasses.dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1024 * 1024


def load(
    repo: repository.Repository,
    ref: str,
    path: str = "fleet",
    *,
    cache: caching.ParseCache | None = None,
    limits: Limits = Limits(),
) -> snapshot.Snapshot:
    """The desired state at ``ref``; problems are collected in ``Snapshot.problems``."""
    commit = repo.resolve(ref)
    root = path.strip("/")
    entries = repo.list_tree(commit.sha, root)
    cache = cache if cache is not None else caching.ParseCache()
    cache.start_generation()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # NOTES.md: building thousands of models is 3-5x slower with the GC running
    try:
        loader = _Loader(repo, root, entries, cache, limits)
        result = loader.run()
    finally:
        if gc_was_enabled:
            gc.enable()
    cache.save()
    return snapshot.Snapshot(
        source=repo.display,
        ref=ref,
        path=root,
        commit=commit,
        objects=result.objects,
        genomes=result.genomes,
        rego=result.rego,
        problems=result.problems,
        files=result.files,
    )


@dataclasses.dataclass
class _Result:
    objects: dict[snapshot.Key, snapshot.Object]
    genomes: dict[tuple[str, str], snapshot.VersionGenome]
    rego: dict[str, str]
    problems: list[errors.Problem]
    files: int


class _Loader:
    def __init__(
        self,
        repo: repository.Repository,
        root: str,
        entries: list[repository.TreeEntry],
        cache: caching.ParseCache,
        limits: Limits,
    ) -> None:
        self.repo = repo
        self.root = root
        self.cache = cache
        self.limits = limits
        self.problems: list[errors.Problem] = []
        self.tree: dict[str, repository.TreeEntry] = {}
        for entry in entries:
            self.tree[entry.path] = entry

    # ---------------------------------------------------------------- steps

    def run(self) -> _Result:
        manifests, rego_files = self._select_files()
        parsed = self._parse(manifests)
        rego = self._read_rego(rego_files)
        objects = self._build_objects(parsed)
        genomes = self._hash_genomes(objects)
        self.problems.extend(checking.check_references(objects))
        return _Result(objects, genomes, rego, self.problems, len(manifests) + len(rego_files))

    def _select_files(self) -> tuple[list[repository.TreeEntry], list[repository.TreeEntry]]:
        manifests: list[repository.TreeEntry] = []
        rego: list[repository.TreeEntry] = []
        for entry in self.tree.values():
            is_manifest = entry.path.endswith(_MANIFEST_SUFFIXES)
            is_rego = entry.path.endswith(_REGO_SUFFIX)
            if not (is_manifest or is_rego):
                continue
            if not self._readable(entry, "file"):
                continue
            (manifests if is_manifest else rego).append(entry)
        for entry in self.tree.values():
            if entry.type == "commit":
                self.problems.append(errors.Problem(entry.path, message="submodules are not supported in a fleet path"))
        return manifests, rego

    def _readable(self, entry: repository.TreeEntry, what: str) -> bool:
        """Whether ``entry`` may be read; records the reason when it may not."""
        parts = entry.path.split("/")
        if entry.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
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

    def _parse(self, manifests: list[repository.TreeEntry]) -> list[tuple[str, parsing.ParsedFile]]:
        results: dict[str, parsing.ParsedFile] = {}
        missing: list[repository.TreeEntry] = []
        for entry in manifests:
            hit = self.cache.get(f"y:{entry.path}:{entry.sha}")
            if hit is None:
                missing.append(entry)
            else:
                results[entry.path] = hit
        if missing:
            blobs = self.repo.read_blobs(e.sha for e in missing)
            for entry in missing:
                parsed = parsing.parse_manifest_file(entry.path, blobs[entry.sha])
                self.cache.put(f"y:{entry.path}:{entry.sha}", parsed)
                results[entry.path] = parsed
        out = []
        for entry in sorted(manifests, key=lambda e: e.path):
            parsed = results[entry.path]
            self.problems.extend(parsed.problems)
            out.append((entry.path, parsed))
        return out

    def _read_rego(self, rego_files: list[repository.TreeEntry]) -> dict[str, str]:
        blobs = self.repo.read_blobs(e.sha for e in rego_files)
        modules: dict[str, str] = {}
        for entry in sorted(rego_files, key=lambda e: e.path):
            try:
                modules[entry.path] = blobs[entry.sha].decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problems.append(errors.Problem(entry.path, message=f"file is not UTF-8 (byte {exc.start})"))
        return modules

    def _build_objects(self, parsed: list[tuple[str, parsing.ParsedFile]]) -> dict[snapshot.Key, snapshot.Object]:
        typed: list[tuple[Any, snapshot.Origin]] = []
        for path, result in parsed:
            for doc in result.documents:
                manifest = models.KINDS[doc.kind].model_validate(doc.data)
                typed.append((manifest, snapshot.Origin(path, doc.index, doc.line)))
        tenants = [m.metadata.name for m, _ in typed if m.kind == "Tenant"]
        default_tenant = tenants[0] if len(tenants) == 1 else None
        objects: dict[snapshot.Key, snapshot.Object] = {}
        for manifest, origin in typed:
            tenant = manifest.metadata.name if manifest.kind == "Tenant" else manifest.metadata.tenant
            if tenant is None:
                if default_tenant is None:
                    why = "the fleet declares no Tenant" if not tenants else f"the fleet has {len(tenants)} tenants"
                    self.problems.append(origin.problem("metadata.tenant", f"required because {why}"))
                    continue
                tenant = default_tenant
            elif manifest.kind != "Tenant" and tenant not in tenants:
                self.problems.append(origin.problem("metadata.tenant", f"Tenant {tenant!r} does not exist"))
                continue
            obj = snapshot.Object(manifest.kind, tenant, manifest.metadata.name, manifest, origin)
            first = objects.get(obj.key)
            if first is not None:
                self.problems.append(
                    origin.problem("metadata.name", f"duplicate {obj.kind} {obj.name!r} (first declared at {first.origin})")
                )
                continue
            objects[obj.key] = obj
        order = {kind: i for i, kind in enumerate(models.KINDS)}
        return dict(sorted(objects.items(), key=lambda item: (order[item[0][0]], item[0][1], item[0][2])))

    def _hash_genomes(self, objects: dict[snapshot.Key, snapshot.Object]) -> dict[tuple[str, str], snapshot.VersionGenome]:
        versions = [o for o in objects.values() if o.kind == "AgentVersion"]
        wanted: dict[str, list[tuple[snapshot.Object, int, str]]] = {}
        prompt_paths: dict[tuple[snapshot.Key, int], str] = {}
        for obj in versions:
            base = posixpath.dirname(obj.origin.file)
            for i, prompt in enumerate(obj.spec.genome.prompts):
                field = f"spec.genome.prompts[{i}].file"
                target = posixpath.normpath(posixpath.join(base, prompt.file))
                if prompt.file.startswith("/") or not _inside(target, self.root):
                    self.problems.append(obj.origin.problem(field, f"prompt file {prompt.file!r} escapes the fleet path"))
                    continue
                entry = self.tree.get(target)
                if entry is None:
                    self.problems.append(obj.origin.problem(field, f"prompt file {target!r} does not exist in this commit"))
                    continue
                if not self._readable(entry, "prompt file"):
                    continue
                prompt_paths[(obj.key, i)] = entry.sha
                wanted.setdefault(entry.sha, []).append((obj, i, target))
        hashes = self._prompt_hashes(wanted)
        genomes: dict[tuple[str, str], snapshot.VersionGenome] = {}
        for obj in versions:
            prompts = obj.spec.genome.prompts
            by_file: dict[str, str] = {}
            for i, prompt in enumerate(prompts):
                sha = prompt_paths.get((obj.key, i))
                digest = hashes.get(sha) if sha else None
                if digest is not None:
                    by_file[prompt.file] = digest
            if len(by_file) != len({p.file for p in prompts}):
                continue  # a prompt problem is already recorded; no hash without every file
            document = genome.genome_document(obj.spec.genome, by_file)
            computed = genome.genome_hash(document)
            stated = obj.spec.genomeHash
            if stated is not None and stated != computed:
                self.problems.append(
                    obj.origin.problem("spec.genomeHash", f"stated {stated} but the genome hashes to {computed}")
                )
            genomes[(obj.tenant, obj.name)] = snapshot.VersionGenome(obj.spec.genome, by_file, computed)
        return genomes

    def _prompt_hashes(self, wanted: dict[str, list[tuple[snapshot.Object, int, str]]]) -> dict[str, str]:
        hashes: dict[str, str] = {}
        missing = []
        for sha in wanted:
            hit = self.cache.get(f"p:{sha}")
            if hit is None:
                missing.append(sha)
            else:
                hashes[sha] = hit
        blobs = self.repo.read_blobs(missing)
        for sha in missing:
            content = blobs[sha]
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as exc:
                for obj, i, target in wanted[sha]:
                    self.problems.append(
                        obj.origin.problem(
                            f"spec.genome.prompts[{i}].file", f"prompt file {target!r} is not UTF-8 (byte {exc.start})"
                        )
                    )
                continue
            hashes[sha] = genome.content_hash(content)
            self.cache.put(f"p:{sha}", hashes[sha])
        return hashes


def _inside(path: str, root: str) -> bool:
    return not root or path == root or path.startswith(root + "/")
