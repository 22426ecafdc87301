"""Asking the policy of any commit: what a ref of the fleet repository would answer a tool call.

The console's policy simulator answers under the applied commit through the decider
(``decisions.deciding.Decider.simulate``); under another ref (a branch under review, a tag, a
SHA) it comes here. The ref is read from Git as a reconcile reads it (``validating.validate``:
from the commit's tree, checked, Rego compiled with the library), the version's effective
envelope is computed as the planner computes it (``context.version_envelope``), the tool's
catalog entry and the environment come from the same commit, and a fresh embedded engine loaded
with that commit's modules evaluates the call (``policy.inputs``). Nothing is stored. The
engine's data holds only what this call needs (the version's envelope, the tenant's tools);
spending and repeated calls count as none.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

from reconciler import errors
from reconciler.desired import caching, repository
from reconciler.desired import snapshot as snapshot_
from reconciler.policy import engines, envelopes, inputs, library, risk
from reconciler.reconcile import actions, context, validating
from reconciler.state import actual as actual_

__all__ = ["Answer", "Source", "decide_at"]

#: Commits the simulator keeps read: one (a snapshot of 10,000 versions holds ~100 MB), so asking
#: again under the branch being reviewed costs no read.
_KEPT_SNAPSHOTS = 1


class Source:
    """Where refs are read: the fleet repository (opened on first use) and the fleet path."""

    def __init__(self, opener: Callable[[], repository.Repository], path: str) -> None:
        self._opener = opener
        self.path = path
        self.cache = caching.ParseCache()
        self._repo: repository.Repository | None = None
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], snapshot_.Snapshot] = {}

    def repository(self) -> repository.Repository:
        with self._lock:
            if self._repo is None:
                self._repo = self._opener()
            return self._repo

    def snapshot(self, ref: str) -> snapshot_.Snapshot:
        """``ref``'s commit, read and checked; the last few are kept, so asking again under the
        same commit costs no read (on 10,000 versions a read takes ~1 s once its files are in the
        parse cache, several the first time)."""
        repo = self.repository()
        key = (ref, repo.resolve(ref).sha)
        with self._lock:
            kept = self._snapshots.get(key)
        if kept is not None:
            return kept
        snap = validating.validate(repo, ref, self.path, cache=self.cache)
        with self._lock:
            self._snapshots[key] = snap
            while len(self._snapshots) > _KEPT_SNAPSHOTS:
                self._snapshots.pop(next(iter(self._snapshots)))
        return snap


@dataclasses.dataclass(frozen=True)
class Answer:
    decision: str
    reasons: list[str]  # secrets in the arguments redacted, as a stored decision's are
    risk: dict[str, Any]
    revision: str  # ref@sha1:<sha>
    envelope: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": self.reasons, "risk": self.risk, "policyRevision": self.revision,
                "envelope": self.envelope}  # fmt: skip


def decide_at(
    source: Source,
    ref: str,
    tenant: str,
    version: str,
    tool: str,
    args: Mapping[str, Any],
    cost_estimate: float,
    *,
    environment: str | None = None,
    instance: Mapping[str, Any] | None = None,
) -> Answer:
    """What ``ref``'s policy answers a call of ``tool`` by ``instance`` (its id and state, as
    stored) or, without one, by a new ACTIVE instance of ``version``, in ``environment``."""
    snap = source.snapshot(ref)
    snap.raise_for_problems()
    obj = snap.get("AgentVersion", tenant, version)
    if obj is None:
        raise errors.NotFound(f"version {version!r} does not exist in tenant {tenant!r} at {snap.revision}")
    ctx = context.Context(snap, actual_.Actual(), _NO_ENGINE, actions.Plan(snap.revision, snap.commit.sha, ""))
    envelope = context.version_envelope(ctx, obj)
    production = False
    if environment is not None:
        env = snap.get("Environment", tenant, environment)
        if env is None:
            raise errors.NotFound(f"environment {environment!r} does not exist in tenant {tenant!r} at {snap.revision}")
        production = bool(snap.data(env).get("spec", {}).get("production"))
    tools = _tools(snap, tenant)
    caller = {
        "id": instance["id"] if instance else f"{version} (simulated)",
        "state": instance["state"] if instance else "ACTIVE",
        "tenant": tenant,
        "template": obj.doc.template,
        "version": version,
    }
    for_policy = envelopes.for_policy(envelope)
    call = inputs.Context(
        caller, {"name": environment, "production": production}, tools.get(tool), envelope, policy_envelope=for_policy
    )
    engine = engines.EmbeddedEngine()
    data = {"arm": {"fleet": {"envelopes": {tenant: {version: for_policy}}, "tools": {tenant: tools}}}}
    engine.load(engines.Bundle(library.modules_for(snap.rego, tests=False), data, snap.commit.sha))
    document, assessment = inputs.build_input(call, tool, args, cost_estimate)
    outcome = inputs.evaluate(engine, document, assessment)
    _, secrets = risk.redact_args(args)
    assessed = outcome.risk.as_dict()
    assessed["reasons"] = [risk.redact_text(reason, secrets) for reason in assessed["reasons"]]
    reasons = [risk.redact_text(reason, secrets) for reason in outcome.reasons]
    return Answer(outcome.decision, reasons, assessed, snap.revision, envelope)


def _tools(snap: snapshot_.Snapshot, tenant: str) -> dict[str, Any]:
    """The tool catalog entries of ``tenant`` at the commit, by name (the first catalog wins, by name)."""
    found: dict[str, Any] = {}
    for catalog in sorted(snap.of_kind("ToolCatalog"), key=lambda o: o.name):
        if catalog.tenant == tenant:
            for entry in snap.data(catalog).get("spec", {}).get("tools", []):
                found.setdefault(entry["name"], entry)
    return found


class _NoEngine:
    """Computing an envelope asks no engine: the planning context only needs one to exist."""

    revision = None

    def load(self, bundle: engines.Bundle) -> None:
        raise errors.InternalError("simulating loads its own engine")

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        raise errors.InternalError("simulating evaluates with its own engine")


_NO_ENGINE: Any = _NoEngine()
