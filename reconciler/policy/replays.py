"""Replaying recorded decisions under another commit's policy (``armctl replay``, ``plan --replay``).

A recorded decision keeps what its evaluation used (``decisions.deciding._replay_data``): the
caller's state and environment, the counters in effect, whether an approval was used, and what
its arguments showed. :class:`Replayer` rebuilds its input from that and the head side's
envelope and catalog, and asks ``policy.impact.decide`` — the decision endpoint's own path —
for the decision the head would give; the flips are grouped like an impact's (``impact.Flips``).

Traffic repeats itself: an outcome is remembered by the stored payload's text (up to
:data:`_SEEN_PAYLOADS` of them) before anything is decoded, and by the input it builds, so each
distinct input is evaluated once. Pure: rows come from ``decisions.replaying``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from reconciler import errors
from reconciler.policy import impact, risk

__all__ = ["NOT_POLICY", "NO_REPLAY_DATA", "UNREADABLE", "VERSION_GONE", "Replay", "Replayer"]


@dataclasses.dataclass
class Replay:
    """What :class:`Replayer` found over a stream of recorded decisions."""

    flips: impact.Flips = dataclasses.field(default_factory=lambda: impact.Flips(examples=3))
    replayed: int = 0
    unreplayable: Counter[str] = dataclasses.field(default_factory=Counter)
    evaluated: int = 0
    first_at: str | None = None
    last_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        flips = self.flips.as_list()
        for flip in flips:
            flip["examples"] = [e for e in flip["examples"]]
            flip.pop("example")
            flip.pop("scope")
        return {
            "replayed": self.replayed,
            "unreplayable": sum(self.unreplayable.values()),
            "unreplayableWhy": dict(sorted(self.unreplayable.items())),
            "changed": sum(f["count"] for f in flips),
            "widening": sum(f["count"] for f in flips if f["widening"]),
            "flips": flips,
            "evaluated": self.evaluated,
            "from": self.first_at,
            "until": self.last_at,
        }


#: Stored payloads remembered by their text (each ~1 KB): a bound on the replayer's memory.
_SEEN_PAYLOADS = 100_000

#: Why a recorded decision cannot be replayed.
NO_REPLAY_DATA = "recorded before replay data was kept"
NOT_POLICY = "not decided by the policy (unknown instance, integrity failure, no envelope)"
VERSION_GONE = "version gone from the head"
UNREADABLE = "payload not readable"


class Replayer:
    """Decides recorded decisions again under ``side``; identical inputs are evaluated once.

    A recorded decision is (id, tenant, at, instance, payload) with the payload as stored (JSON
    text or bytes, or decoded). The cache key is what the input is made of: the call's identity
    (its key hashes the tool and the arguments), the caller, the counters and what the arguments
    showed; the instance's id only where the fleet's Rego reads the caller.
    """

    def __init__(self, side: impact.Side, *, tenant: str | None = None) -> None:
        self.side = side
        self.tenant = tenant
        self.result = Replay()
        self._per_instance = side.reads_caller
        self._cache: dict[tuple[Any, ...], str] = {}
        self._seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def feed(self, rows: Iterable[tuple[Any, str, Any, str | None, Any]]) -> Replay:
        """Replay ``rows``; the result so far (a replayer may be fed several streams)."""
        result, tenant_only, per_instance = self.result, self.tenant, self._per_instance
        unreplayable, flips, seen = result.unreplayable, result.flips, self._seen
        replayed = 0
        stamp: Any = None
        for decision_id, tenant, at, instance, payload in rows:
            if tenant_only is not None and tenant != tenant_only:
                continue
            # Traffic repeats itself: a payload stored as the same text is the same call, decided
            # the same way, so its outcome is looked up by the text before anything is decoded.
            key = (tenant, instance if per_instance else None, payload) if type(payload) is not dict else None
            known = seen.get(key) if key is not None else None
            if known is None:
                known = self._outcome(tenant, instance, payload)
                if key is not None and len(seen) < _SEEN_PAYLOADS:
                    seen[key] = known
            if known[0] is None:
                unreplayable[known[1]] += 1
                continue
            replayed += 1
            if stamp is None:
                stamp = at
                if result.first_at is None:
                    result.first_at = at if isinstance(at, str) else at.isoformat()
            stamp = at
            _, tool, before, after, version = known
            if before != after:
                flips.add(tool, before, after, tenant, tenant, version, decision_id)
        if stamp is not None:
            result.last_at = stamp if isinstance(stamp, str) else stamp.isoformat()
        result.replayed += replayed
        result.evaluated = len(self._cache)
        return result

    def _outcome(self, tenant: str, instance: str | None, raw: Any) -> tuple[Any, ...]:
        """(True, tool, recorded, replayed, version) or (None, why it cannot be replayed)."""
        try:
            payload = raw if type(raw) is dict else orjson.loads(raw)
        except orjson.JSONDecodeError:
            return (None, UNREADABLE)
        if not isinstance(payload, dict) or not isinstance(payload.get("replay", {}), dict):
            return (None, UNREADABLE)
        data = payload.get("replay")
        if data is None:
            return (None, NO_REPLAY_DATA)
        if not data.get("policy"):
            return (None, NOT_POLICY)
        version = payload.get("version")
        if (tenant, version) not in self.side.envelopes:
            return (None, VERSION_GONE)
        findings = data.get("findings") or {}
        key = (
            tenant,
            version,
            instance if self._per_instance else None,
            payload.get("callKey"),
            data.get("state"),
            data.get("environment"),
            data.get("production"),
            payload.get("costEstimate"),
            data.get("spentRun"),
            data.get("spentDay"),
            data.get("loop"),
            data.get("granted"),
            tuple(sorted(findings.items())) if findings else None,
        )
        after = self._cache.get(key)
        if after is None:
            after = self._cache[key] = self._decide(tenant, str(version), instance or "", payload, data, findings)
        return (True, payload.get("tool", ""), payload.get("decision"), after, version)

    def _decide(
        self, tenant: str, version: str, instance: str, payload: Mapping[str, Any], data: Mapping[str, Any], found: Any
    ) -> str:
        args = payload.get("args")
        cost = payload.get("costEstimate")
        try:
            outcome = impact.decide(
                self.side, tenant, version, instance, str(data.get("state")), data.get("environment"),
                bool(data.get("production")), str(payload.get("tool", "")), args if isinstance(args, dict) else {},
                float(cost) if isinstance(cost, int | float) else 0.0, risk.findings_of(found),
                spent_run=_whole(data.get("spentRun")), spent_day=_whole(data.get("spentDay")), loop=_whole(data.get("loop")),
                granted=data.get("granted") is True, template=data.get("template"),
            )  # fmt: skip
        except errors.PolicyError as exc:
            raise errors.PolicyError(f"replaying a decision of {tenant}/{version}: {exc}") from exc
        return outcome.decision


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
