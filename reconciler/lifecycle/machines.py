"""The three lifecycle state machines, in one place, and the checks every transition passes.

- Version: ``DRAFT → TESTING → CANDIDATE → APPROVED → DEPRECATED → RETIRED`` and
  ``TESTING → DRAFT`` (a failed evaluation).
- Instance: ``PROVISIONING → ACTIVE``; ``ACTIVE → PAUSED | READONLY | DRAINING | QUARANTINED``;
  ``PAUSED | READONLY → ACTIVE`` (resume), ``PAUSED → PROVISIONING`` (resume of an instance
  paused before it ever started: it still waits for its first heartbeat); a held instance may be escalated to quarantine or
  drained; ``DRAINING | QUARANTINED | PAUSED | READONLY → RETIRED``; an instance still
  ``PROVISIONING`` when its deployment goes away is retired directly, and an emergency control
  (a tenant's kill switch above all) may pause or quarantine it before it ever ran.
- Deployment: ``PENDING → ACTIVE → ROLLING_BACK → RETIRED``; ``PENDING → RETIRED`` when
  superseded before activation and ``ACTIVE → RETIRED`` when superseded or pruned.

The manifest states where a version should be; :func:`path` is the legal walk there, one step at
a time, each step checked by its gate and recorded on its own. An illegal step is never applied:
:func:`check` raises :class:`IllegalTransition` naming from, to and the allowed next states.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping

from reconciler import errors

__all__ = ["DEPLOYMENT", "INSTANCE", "VERSION", "IllegalTransition", "Machine"]


class IllegalTransition(errors.ArmError):
    def __init__(self, machine: str, current: str, target: str, allowed: tuple[str, ...]) -> None:
        self.machine = machine
        self.current = current
        self.target = target
        self.allowed = allowed
        nexts = ", ".join(allowed) if allowed else "none (final state)"
        super().__init__(f"{machine} cannot go from {current} to {target}; allowed next states: {nexts}")


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    states: tuple[str, ...]
    initial: str
    edges: Mapping[str, tuple[str, ...]]

    def allowed(self, current: str) -> tuple[str, ...]:
        return self.edges.get(current, ())

    def is_legal(self, current: str, target: str) -> bool:
        return target in self.allowed(current)

    def check(self, current: str, target: str) -> None:
        if current not in self.states:
            raise errors.ArmError(f"{current!r} is not a {self.name} state")
        if not self.is_legal(current, target):
            raise IllegalTransition(self.name, current, target, self.allowed(current))

    def path(self, current: str, target: str) -> list[str]:
        """The shortest legal walk from ``current`` to ``target`` (excluding ``current``).

        Raises :class:`IllegalTransition` (with the first step's alternatives) when ``target``
        cannot be reached.
        """
        if current == target:
            return []
        previous: dict[str, str] = {}
        queue = collections.deque([current])
        while queue:
            state = queue.popleft()
            for nxt in self.allowed(state):
                if nxt in previous or nxt == current:
                    continue
                previous[nxt] = state
                if nxt == target:
                    steps = [target]
                    while previous[steps[-1]] != current:
                        steps.append(previous[steps[-1]])
                    return steps[::-1]
                queue.append(nxt)
        raise IllegalTransition(self.name, current, target, self.allowed(current))


VERSION = Machine(
    name="AgentVersion",
    states=("DRAFT", "TESTING", "CANDIDATE", "APPROVED", "DEPRECATED", "RETIRED"),
    initial="DRAFT",
    edges={
        "DRAFT": ("TESTING",),
        "TESTING": ("CANDIDATE", "DRAFT"),
        "CANDIDATE": ("APPROVED",),
        "APPROVED": ("DEPRECATED",),
        "DEPRECATED": ("RETIRED",),
        "RETIRED": (),
    },
)

INSTANCE = Machine(
    name="Instance",
    states=("PROVISIONING", "ACTIVE", "PAUSED", "READONLY", "DRAINING", "QUARANTINED", "RETIRED"),
    initial="PROVISIONING",
    edges={
        "PROVISIONING": ("ACTIVE", "PAUSED", "QUARANTINED", "RETIRED"),
        "ACTIVE": ("PAUSED", "READONLY", "DRAINING", "QUARANTINED"),
        "PAUSED": ("ACTIVE", "PROVISIONING", "QUARANTINED", "DRAINING", "RETIRED"),
        "READONLY": ("ACTIVE", "QUARANTINED", "DRAINING", "RETIRED"),
        "DRAINING": ("RETIRED",),
        "QUARANTINED": ("RETIRED",),
        "RETIRED": (),
    },
)

DEPLOYMENT = Machine(
    name="Deployment",
    states=("PENDING", "ACTIVE", "ROLLING_BACK", "RETIRED"),
    initial="PENDING",
    edges={
        "PENDING": ("ACTIVE", "RETIRED"),
        "ACTIVE": ("ROLLING_BACK", "RETIRED"),
        "ROLLING_BACK": ("RETIRED",),
        "RETIRED": (),
    },
)

#: Instance states an operator's emergency control puts an instance in; Git leaves them alone.
HELD_STATES = frozenset({"PAUSED", "READONLY", "QUARANTINED"})

VERSION_RANK = {state: i for i, state in enumerate(VERSION.states)}
