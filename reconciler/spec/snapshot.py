"""The desired state of a fleet at one commit: typed objects, genome hashes, Rego modules.

A :class:`Snapshot` is what ``loading`` produces from a commit and what the planner diffs against
the database. Objects are keyed ``(kind, tenant, name)``; every object remembers where it was
declared (file, document, line) so later errors can point back at the manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from reconciler import errors
from reconciler.spec import genome, models, repository

__all__ = ["Key", "Object", "Origin", "Snapshot", "VersionGenome"]

Key = tuple[str, str, str]  # (kind, tenant, name)


@dataclasses.dataclass(frozen=True)
class Origin:
    file: str
    document: int
    line: int

    def problem(self, field: str | None, message: str) -> errors.Problem:
        return errors.Problem(self.file, self.document, self.line, field, message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Object:
    kind: str
    tenant: str
    name: str
    manifest: Any  # one of models.Manifest; Any keeps attribute access readable for callers
    origin: Origin

    @property
    def key(self) -> Key:
        return (self.kind, self.tenant, self.name)

    @property
    def spec(self) -> Any:
        return self.manifest.spec

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest.metadata.labels)


@dataclasses.dataclass(frozen=True)
class VersionGenome:
    """A version's genome as hashed: the canonical document is built on demand."""

    genome: models.Genome
    prompt_hashes: dict[str, str]
    hash: str

    def document(self) -> dict[str, Any]:
        return genome.genome_document(self.genome, self.prompt_hashes)


@dataclasses.dataclass
class Snapshot:
    source: str
    ref: str
    path: str
    commit: repository.Commit
    objects: dict[Key, Object]
    genomes: dict[tuple[str, str], VersionGenome]  # (tenant, version name) → genome
    rego: dict[str, str]  # repository path → module text
    problems: list[errors.Problem]
    files: int = 0

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
        return (o for o in self.objects.values() if o.kind == kind)

    def get(self, kind: str, tenant: str, name: str) -> Object | None:
        return self.objects.get((kind, tenant, name))

    def counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in models.KINDS}
        for kind, _, _ in self.objects:
            counts[kind] += 1
        counts["Rego"] = len(self.rego)
        return counts
