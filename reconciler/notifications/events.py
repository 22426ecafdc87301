"""Which changes are told, as which event, and to which channels. Pure: no database, no HTTP.

A change record is told when its type is a notification event (``desired.kinds.NOTIFICATION_EVENTS``)
— approvals requested, escalated, expired; canaries halted and rolled back; a version's genome
found altered; a budget exceeded; a deployed version failing its evaluation — or when it records
an emergency control: ``EMERGENCY_PAUSE`` / ``QUARANTINE`` / ``READONLY`` as recorded, and the
read-only, drain and resume controls (recorded as ``INSTANCE_TRANSITIONED`` with the control that
moved the instance) as ``EMERGENCY_READONLY``, ``EMERGENCY_DRAIN`` and ``EMERGENCY_RELEASE``. A
tenant's kill switch is told once, by its Tenant record, not once per instance it holds.

Two events are not change records: ``GATE_WAITING`` (an object starts to wait at a gate: the
applier tells it once, when its Waiting condition appears) and ``RECONCILE_FAILED`` (a commit
that could not be applied: told with the failed run, once per commit). ``outbox`` stores what
:func:`of_record` and :class:`Event` give; ``delivering`` turns it into the bytes sent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reconciler.desired import kinds

__all__ = [
    "EVENTS",
    "EVERYWHERE",
    "TOLD_TYPES",
    "Channel",
    "Event",
    "of_record",
    "record_event",
    "scope",
    "slack_text",
    "summary",
]

EVENTS = frozenset(kinds.NOTIFICATION_EVENTS)

#: Change-record types told as the event of the same name.
_RECORDED = EVENTS - {"GATE_WAITING", "RECONCILE_FAILED", "EMERGENCY_DRAIN"}

#: ``INSTANCE_TRANSITIONED`` by an emergency control → the event it is told as.
_CONTROLS = {"read-only": "EMERGENCY_READONLY", "drain": "EMERGENCY_DRAIN", "resume": "EMERGENCY_RELEASE"}

#: Record types that may be told at all: the cheap test on every chain write, the decision
#: writer's included (most of its records are never told).
TOLD_TYPES = frozenset(_RECORDED | {"INSTANCE_TRANSITIONED"})


#: ``Event.environments`` of an event about a whole tenant or the whole fleet: every channel
#: subscribed to it hears it, whatever environments it names.
EVERYWHERE = None


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing to tell. ``tenant`` None: the whole fleet (a failed reconcile), told to the
    channels of every tenant that subscribe to it."""

    event: str
    tenant: str | None
    object_kind: str
    object_name: str
    summary: str
    details: Any = None
    #: the change record it tells: seq, hash, commit SHA, operator, author (None: not a record)
    record: dict[str, Any] | None = None
    #: where it happens, found by ``outbox`` (:func:`scope`): the environments of the instance,
    #: deployment or version it is about (none: tied to no environment), or :data:`EVERYWHERE`
    environments: tuple[str, ...] | None = ()

    def payload(self) -> dict[str, Any]:
        """What is stored in the outbox and sent (``delivering`` adds the delivery id and channel)."""
        envs = self.environments
        return {
            "event": self.event,
            "tenant": self.tenant,
            "environment": envs[0] if envs is not None and len(envs) == 1 else None,
            "environments": None if envs is None else list(envs),
            "object": {"kind": self.object_kind, "name": self.object_name},
            "summary": self.summary,
            "details": self.details,
            "record": self.record,
        }


def scope(event: Event) -> tuple[str, str]:
    """What an event's environments are found through: ("Instance" | "Deployment" | "AgentVersion",
    name); ("*", "") for a tenant's or the fleet's (every environment); ("", "") for none."""
    kind, name = event.object_kind, event.object_name
    if kind in ("Instance", "Deployment", "AgentVersion"):
        return kind, name
    if kind in ("Tenant", "Commit"):
        return "*", ""
    subject = event.details.get("subject") if isinstance(event.details, dict) else None
    if kind == "Approval" and isinstance(subject, dict):
        if subject.get("kind") == "ToolCall":
            return "Instance", str(subject.get("instance") or subject.get("name") or "")
        if subject.get("kind") in ("Deployment", "AgentVersion"):
            return str(subject["kind"]), str(subject.get("name") or "")
    return "", ""


def of_record(row: dict[str, Any]) -> str | None:
    """The event a change-record row (as ``audit.chain`` builds it) is told as, or None."""
    kind = row["type"]
    if kind not in TOLD_TYPES:
        return None
    after = row["after"] if isinstance(row["after"], dict) else {}
    control = after.get("control")
    if isinstance(control, str) and control.startswith("tenant-"):
        return None  # the kill switch: told once, by the tenant's own record
    if kind == "INSTANCE_TRANSITIONED":
        return _CONTROLS.get(control) if isinstance(control, str) and row.get("operator") else None
    return kind


def record_event(row: dict[str, Any], event: str) -> Event:
    """The :class:`Event` telling change record ``row`` as ``event``."""
    return Event(
        event=event,
        tenant=row["tenant"],
        object_kind=row["object_kind"],
        object_name=row["object_name"],
        summary=summary(event, row),
        details=row["after"],
        record={
            "seq": row["seq"],
            "hash": row.get("hash"),
            "sha": row["sha"],
            "operator": row["operator"],
            "author": row["author"] or None,
            "at": row["at"].isoformat() if hasattr(row["at"], "isoformat") else row["at"],
        },
    )


def summary(event: str, row: dict[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    after = row["after"] if isinstance(row["after"], dict) else {}
    what = f"{row['object_kind']} {row['object_name']}"
    by = f" by {row['operator']}" if row.get("operator") else ""
    reason = after.get("reason")
    because = f": {reason}" if isinstance(reason, str) and reason else ""
    found = after.get("subject")
    subject: dict[str, Any] = found if isinstance(found, dict) else {}
    target = subject.get("name") or subject.get("instance") or ""
    subject_text = f"{subject.get('kind', '')} {target}".strip()
    if event == "APPROVAL_REQUESTED":
        step = after.get("transition") or (f"call {subject.get('tool')}" if subject.get("tool") else "")
        return f"approval {row['object_name']} requested for {subject_text} {step}".rstrip()
    if event == "APPROVAL_ESCALATED":
        return f"approval {row['object_name']} for {subject_text} escalated to {', '.join(after.get('roles') or [])}"
    if event == "APPROVAL_EXPIRED":
        return f"approval {row['object_name']} for {subject_text} expired undecided"
    if event == "DEPLOYMENT_CANARY_HALTED":
        return f"canary of deployment {row['object_name']} halted at {after.get('weight')}%{because}"
    if event == "DEPLOYMENT_ROLLED_BACK":
        return f"deployment {row['object_name']} rolled back"
    if event.startswith("EMERGENCY_"):
        action = {"EMERGENCY_PAUSE": "paused", "EMERGENCY_QUARANTINE": "quarantined", "EMERGENCY_READONLY": "set read-only",
                  "EMERGENCY_DRAIN": "drained", "EMERGENCY_RELEASE": "released"}[event]  # fmt: skip
        return f"{what} {action}{by}{because}"
    if event == "VERSION_INTEGRITY_FAILED":
        return f"the stored genome of version {row['object_name']} does not match its hash: its instances are denied"
    if event == "BUDGET_EXCEEDED":
        reasons = after.get("reasons") or []
        first = next((r for r in reasons if isinstance(r, str) and r.startswith("BUDGET_EXCEEDED")), "")
        return f"instance {row['object_name']} exceeded its budget calling {after.get('tool')}" + (f": {first}" if first else "")
    if event == "EVALUATION_FAILED":
        return f"deployed version {row['object_name']} failed suite {after.get('suite')}: {after.get('summary')}"
    return f"{event} {what}{by}"


def slack_text(payload: dict[str, Any]) -> str:
    """The ``text`` of a Slack-compatible message for a stored payload."""
    where = "/".join(p for p in (payload.get("tenant"), payload.get("environment")) if p)
    return f"[ARM] {payload['event']}" + (f" ({where})" if where else "") + f": {payload['summary']}"


@dataclasses.dataclass(frozen=True)
class Channel:
    """A NotificationChannel as applied: what it wants told (its spec, read from the store)."""

    tenant: str
    name: str
    events: frozenset[str]
    environments: frozenset[str] | None

    @classmethod
    def of(cls, tenant: str, name: str, spec: dict[str, Any]) -> Channel:
        envs = spec.get("environments")
        return cls(tenant, name, frozenset(spec.get("events") or ()), None if envs is None else frozenset(envs))

    def wants(self, event: Event) -> bool:
        """Whether this channel subscribes to ``event``: its type, its tenant (a fleet-wide event
        reaches every tenant's channels), and, when the channel names environments, one of the
        event's (an event tied to no environment then does not reach it; one about a whole tenant
        or the fleet does)."""
        if event.event not in self.events or (event.tenant is not None and event.tenant != self.tenant):
            return False
        if self.environments is None or event.environments is EVERYWHERE:
            return True
        return not self.environments.isdisjoint(event.environments)
