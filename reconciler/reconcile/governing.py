"""Policy changes governed like promotions: a change that widens decisions waits for approval.

A tenant that declares ``spec.policyChanges.widening: {requiredApprovals, approverRoles}`` wants
a human to approve every commit whose policy would allow what was not allowed (or ask for
approval where it denied) for its agents. Before an apply that touches what decides tool calls
(envelopes, catalogs, fleet Rego), :func:`check` compares the database's policy with the
commit's (``policy.impact.probe``); for each such tenant with widening flips it looks for an
approval of this change (subject ``PolicyChange`` named by the commit SHA, transition
``widening``): approved, the apply goes on; otherwise the approval is requested once (an
``APPROVAL_REQUESTED`` record naming the flips) and the whole commit waits: nothing of it is
applied, the last applied commit stays in force, and the condition says which flips wait for
which approval. A narrowing change finds no widening flip and applies at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from reconciler.desired import snapshot as snapshot_
from reconciler.oversight import approving
from reconciler.policy import impact
from reconciler.reconcile import actions, impacting
from reconciler.state import actual as actual_
from reconciler.state import fleetstate

__all__ = ["SUBJECT", "TRANSITION", "check", "widening"]

SUBJECT = approving.POLICY_CHANGE
TRANSITION = approving.WIDENING
_SHOWN = 5


def _rules(snap: snapshot_.Snapshot) -> dict[str, dict[str, Any]]:
    found = {}
    for tenant in snap.of_kind("Tenant"):
        rule = ((snap.data(tenant).get("spec") or {}).get("policyChanges") or {}).get("widening")
        if rule:
            found[tenant.name] = rule
    return found


def _governed(snap: snapshot_.Snapshot) -> bool:
    return bool(_rules(snap))


def _touches_policy(plan: actions.Plan, actual: actual_.Actual, policy_digest: str) -> bool:
    if plan.envelope_updates or (actual.policy_digest or "") != policy_digest:
        return True
    return any(a.kind in ("PolicyEnvelope", "ToolCatalog", "Tenant", "Environment", "Deployment") for a in plan.actions)


def widening(connection: sa.Connection, snap: snapshot_.Snapshot) -> dict[str, list[dict[str, Any]]] | None:
    """The widening flips per governed tenant of applying ``snap`` over what the database
    applied; None when no tenant governs policy changes or nothing is applied yet (a first apply
    has no decisions to widen). Read-only: the apply calls it before it takes the write lock,
    so decisions are not held up while the probes run."""
    if not _governed(snap) or not (fleetstate.read(connection) or {}).get("applied_sha"):
        return None
    head = impacting.side_of_snapshot(snap)
    widened = impact.probe(impacting.side_of_database(connection), head).flips.widening_tenants()
    return {tenant: flips for tenant, flips in widened.items() if head.widening_rules.get(tenant)}


def check(
    connection: sa.Connection,
    snap: snapshot_.Snapshot,
    actual: actual_.Actual,
    plan: actions.Plan,
    policy_digest: str,
    now: dt.datetime,
    widened: dict[str, list[dict[str, Any]]] | None,
) -> tuple[list[actions.Condition], bool]:
    """The conditions the commit waits on (none: apply it), and whether this call requested an
    approval (wrote something). ``widened``: what :func:`widening` found before the write
    transaction."""
    if not widened or actual.applied_sha is None or not _touches_policy(plan, actual, policy_digest):
        return [], False
    head_rules = {t: r for t, r in _rules(snap).items() if t in widened}
    waiting = []
    requested = False
    for tenant, flips in sorted(widened.items()):
        rule = head_rules.get(tenant)
        if not rule:
            continue
        row = approving.policy_change(connection, tenant, snap.commit.sha)
        if row is not None and row.status == "APPROVED":
            continue
        summary = "; ".join(
            f"{f['from']} → {f['to']} {f['tool']} ({f['byTenant'].get(tenant, f['count'])} in {f['scope']})"
            for f in flips[:_SHOWN]
        ) + (f"; and {len(flips) - _SHOWN} more" if len(flips) > _SHOWN else "")
        if row is None:
            approval_id = approving.request_policy_change(
                connection, tenant, snap.commit.sha, snap.revision, dict(rule), flips, summary, now
            )
            status, requested = "PENDING", True
        else:
            approval_id, status = row.id, row.status
        roles = " or ".join(rule.get("approverRoles") or [])
        required = rule.get("requiredApprovals") or 1
        verb = "was denied" if status == "DENIED" else f"waits for {required} approval{'s' if required > 1 else ''} from {roles}"
        waiting.append(
            actions.Condition(
                kind="PolicyChange",
                tenant=tenant,
                name=snap.commit.sha,
                type="Waiting",
                reason="ApprovalDenied" if status == "DENIED" else "ApprovalPending",
                message=f"the policy change widens decisions: {summary}; it {verb} (approval {approval_id})",
            )
        )
    return waiting, requested
