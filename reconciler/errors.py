"""The one exception tree of ARM Reconciler.

Every error the project raises on purpose derives from :class:`ArmError`; the CLI catches only
that type, prints ``Type: message`` and exits non-zero, so no traceback ever reaches a user.
Errors say what they are about (file, document, field or object) and how they should be
handled::

    ArmError
    ├── ConfigError            bad settings or command-line input; a human must fix it
    ├── SourceError            the fleet source cannot be read (unknown ref, clone failed)
    ├── ValidationFailed       a commit's manifests or Rego are invalid; carries every Problem
    ├── PlanError              the commit is valid but cannot be applied (genome change, illegal
    │                          lifecycle step); carries every Problem
    ├── PolicyError            the policy engine refused a module or an evaluation
    ├── StoreError             the database is unreachable or its schema is not this version's
    ├── NotFound               an object named on the command line or API does not exist
    ├── Forbidden              the caller may not do this (role, scope)
    ├── Conflict               the object is not in a state that allows this (already decided,
    │                          not held); asking again will not help
    ├── Unauthenticated        the caller did not prove who it is (token, webhook signature)
    └── InternalError          a bug: what the code did not expect; logged with its traceback
                               where it happened, recorded (a failed reconcile run), reported

Lower layers raise these; nothing below ``cli`` prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

__all__ = [
    "ArmError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "InternalError",
    "NotFound",
    "PlanError",
    "PolicyError",
    "Problem",
    "SourceError",
    "StoreError",
    "Unauthenticated",
    "ValidationFailed",
]


class ArmError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(ArmError):
    """Settings or arguments that cannot work; a human must change them."""


class SourceError(ArmError):
    """The fleet repository, ref or path cannot be read."""


class PolicyError(ArmError):
    """The policy engine refused a module, data or a query."""


class StoreError(ArmError):
    """The database cannot be used: unreachable, locked, or its schema is behind."""


class NotFound(ArmError):
    """An object named by the caller does not exist."""


class Forbidden(ArmError):
    """The caller is not allowed to do this."""


class Conflict(ArmError):
    """The object named is not in a state that allows this (an approval already decided)."""


class Unauthenticated(ArmError):
    """No usable credential: a missing or wrong token, a webhook signature that does not match."""


class InternalError(ArmError):
    """A bug, caught where it can still be recorded; the message names the original error."""


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a commit, located as precisely as it is known.

    ``document`` is the 0-based index of the YAML document in a multi-document file; ``line``
    is 1-based. ``field`` is a dotted path into the document (``spec.genome.model``).
    """

    file: str
    document: int | None = None
    line: int | None = None
    field: str | None = None
    message: str = ""

    def where(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts[0] = f"{self.file}:{self.line}"
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.field:
            parts.append(f"field {self.field}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def __reduce__(self) -> tuple[object, ...]:
        # Through a function, not the class: the parse cache's unpickler admits no class.
        return (_new_problem, (self.file, self.document, self.line, self.field, self.message))


def _new_problem(file: str, document: int | None, line: int | None, field: str | None, message: str) -> Problem:
    return Problem(file, document, line, field, message)


class ValidationFailed(ArmError):
    """A commit is invalid; ``problems`` lists every reason, sorted by file and position."""

    def __init__(self, problems: Iterable[Problem], revision: str | None = None) -> None:
        self.problems = sorted(problems, key=_problem_order)
        self.revision = revision
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}"
        if revision:
            head += f" in {revision}"
        lines = [head] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class PlanError(ValidationFailed):
    """A valid commit the store cannot move to (genome mutation, illegal transition)."""


def _problem_order(p: Problem) -> tuple[str, int, int, str, str]:
    return (p.file, p.document if p.document is not None else -1, p.line or 0, p.field or "", p.message)
