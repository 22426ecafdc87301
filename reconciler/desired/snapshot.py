"""The desired state of a fleet at one commit: objects, genome hashes, Rego modules, problems.

A :class:`Snapshot` is what ``loading`` produces from a commit and what the planner diffs against
the database. Objects are keyed ``(kind, tenant, name)``; each carries its document summary
(``documents.Document``: digest and references) and where it was declared (file, document, line).
Full pydantic models are built only on demand (:meth:`Snapshot.manifest`), from data kept in
memory when the file was just parsed; when it came from the cache, from the cache's entry of its
documents (kept once a load needed them) or by reading its blob again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import orjson

from reconciler import errors
from reconciler.desired import documents, genome, kinds, repository

__all__ = ["Document", "Key", "Object", "Origin", "Snapshot"]

Key = tuple[str, str, str]  # (kind, tenant, name)


class Origin(NamedTuple):
    """Where an object was declared. Named tuples here: a load makes one per document."""

    file: str
    document: int
    line: int
    blob: str = ""

    def problem(self, field: str | None, message: str) -> errors.Problem:
        return errors.Problem(self.file, self.document, self.line, field, message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Document(NamedTuple):
    """A document read again: its data as JSON, and a version's genome template (else None)."""

    data: bytes
    template: tuple[str, ...] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Through a function, not the class: the parse cache's unpickler admits no class.
        return (_new_document, (self.data, self.template))


def _new_document(data: bytes, template: tuple[str, ...] | None) -> Document:
    return Document(data, template)


class Object(NamedTuple):
    kind: str
    tenant: str
    name: str
    doc: documents.Document
    origin: Origin

    @property
    def key(self) -> Key:
        return (self.kind, self.tenant, self.name)


@dataclasses.dataclass
class Snapshot:
    source: str
    ref: str
    path: str
    commit: repository.Commit
    objects: dict[Key, Object]
    genome_hashes: dict[tuple[str, str], str]  # (tenant, version) → sha256:...
    prompt_hashes: dict[tuple[str, str], list[str]]  # (tenant, version) → content hash per prompt
    rego: dict[str, str]  # repository path → module text
    problems: list[errors.Problem]
    files: int = 0
    #: valid but without effect (``checking.warnings``): reported, never fatal
    warnings: list[errors.Problem] = dataclasses.field(default_factory=list)
    #: (file, document index) → JSON bytes of the document, for what was parsed in this load
    raw: dict[tuple[str, int], bytes] = dataclasses.field(default_factory=dict, repr=False)
    #: reads (file, blob) pairs again when a document is needed that came from the cache
    reread: Callable[[list[tuple[str, str]]], dict[tuple[str, int], Document]] | None = dataclasses.field(
        default=None, repr=False
    )
    #: (file, document index) → a version's genome template, for the documents read again
    templates: dict[tuple[str, int], tuple[str, ...]] = dataclasses.field(default_factory=dict, repr=False)
    #: (tenant, version) → canonical genome text, for the genomes hashed in this load
    genome_texts: dict[tuple[str, str], bytes] = dataclasses.field(default_factory=dict, repr=False)
    _models: dict[Key, Any] = dataclasses.field(default_factory=dict, repr=False)
    _data: dict[tuple[str, int], Any] = dataclasses.field(default_factory=dict, repr=False)
    _by_kind: dict[str, list[Object]] | None = dataclasses.field(default=None, repr=False)
    #: the commit's fleet tree (path → entry) and each version's prompt blobs: what the next
    #: load needs to reuse this snapshot for the files a new commit did not touch
    tree: dict[str, repository.TreeEntry] = dataclasses.field(default_factory=dict, repr=False)
    prompt_blobs: dict[tuple[str, str], tuple[str | None, ...]] = dataclasses.field(default_factory=dict, repr=False)
    prompt_paths: set[str] = dataclasses.field(default_factory=set, repr=False)

    @property
    def revision(self) -> str:
        return f"{self.ref}@sha1:{self.commit.sha}"

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            raise errors.ValidationFailed(self.problems, revision=self.revision)

    def of_kind(self, kind: str) -> Iterator[Object]:
        """The objects of one kind, in key order (indexed on first use)."""
        if self._by_kind is None:
            index: dict[str, list[Object]] = {}
            for obj in self.objects.values():
                index.setdefault(obj.kind, []).append(obj)
            self._by_kind = index
        return iter(self._by_kind.get(kind, ()))

    def get(self, kind: str, tenant: str, name: str) -> Object | None:
        return self.objects.get((kind, tenant, name))

    def counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in kinds.KIND_NAMES}
        for kind, _, _ in self.objects:
            counts[kind] += 1
        counts["Rego"] = len(self.rego)
        return counts

    def release_data(self) -> None:
        """Drop document data and models (kept: objects, hashes, tree) once the snapshot is applied."""
        self.raw = {}
        self.templates = {}
        self._data.clear()
        self._models.clear()
        self.genome_texts = {}

    # ------------------------------------------------------------------ full models

    def manifest(self, obj: Object) -> Any:
        """The validated pydantic model of ``obj`` (one of ``models.Manifest``)."""
        model = self._models.get(obj.key)
        if model is None:
            self.load_manifests([obj])
            model = self._models[obj.key]
        return model

    def load_manifests(self, objects: list[Object]) -> None:
        """Build the models of ``objects`` at once, reading their files in one batch if needed."""
        wanted = [o for o in objects if o.key not in self._models]
        missing = {(o.origin.file, o.origin.blob) for o in wanted if (o.origin.file, o.origin.document) not in self.raw}
        if missing:
            if self.reread is None:
                raise errors.ArmError("the snapshot cannot read its files again")
            self._take(self.reread(sorted(missing)))
        for obj in wanted:
            data = self.raw[(obj.origin.file, obj.origin.document)]
            self._models[obj.key] = _models().KINDS[obj.kind].model_validate_json(data)

    def prefetch(self, objects: Iterator[Object] | list[Object]) -> None:
        """Read the files of ``objects`` whose documents are not in memory, in one batch (before
        calling :meth:`data` on many of them)."""
        missing = sorted({(o.origin.file, o.origin.blob) for o in objects if (o.origin.file, o.origin.document) not in self.raw})
        if missing and self.reread is not None:
            self._take(self.reread(missing))

    def data(self, obj: Object) -> dict[str, Any]:
        """The document of ``obj`` as plain data (as written, defaults not filled in)."""
        key = (obj.origin.file, obj.origin.document)
        if key not in self.raw:
            if self.reread is None:
                raise errors.ArmError("the snapshot cannot read its files again")
            self._take(self.reread([(obj.origin.file, obj.origin.blob)]))
        data = self._data.get(key)
        if data is None:
            data = self._data[key] = orjson.loads(self.raw[key])
        return data

    def _take(self, found: dict[tuple[str, int], Document]) -> None:
        for key, document in found.items():
            self.raw[key] = document.data
            if document.template is not None:
                self.templates[key] = document.template

    def genome_text(self, obj: Object) -> bytes:
        """The canonical genome of a version as JSON text (what its hash is computed over)."""
        text = self._known_genome(obj)
        if text is None:
            text = genome.canonical_json(self.genome_document(obj))
        return text

    def genome_document(self, obj: Object) -> dict[str, Any]:
        """The canonical genome of a version, prompts replaced by their content hashes."""
        text = self._known_genome(obj)
        if text is not None:
            return orjson.loads(text)  # type: ignore[no-any-return]
        spec = self.manifest(obj).spec
        hashes = self.prompt_hashes.get((obj.tenant, obj.name), [])
        return genome.genome_document(spec.genome, {p.file: h for p, h in zip(spec.genome.prompts, hashes, strict=True)})

    def _known_genome(self, obj: Object) -> bytes | None:
        """A version's genome text without building its model: hashed in this load, or filled
        in from the genome template of its document read again."""
        name = (obj.tenant, obj.name)
        text = self.genome_texts.get(name)
        if text is None:
            template = self.templates.get((obj.origin.file, obj.origin.document))
            hashes = self.prompt_hashes.get(name)
            if template is not None and hashes is not None and len(hashes) == len(template) - 1:
                text = genome.fill_template(template, hashes)
        return text


def _models() -> Any:
    # The pydantic models cost ~40 ms to import; only code that builds full models needs them.
    from reconciler.desired import models

    return models
