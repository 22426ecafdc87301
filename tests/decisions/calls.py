"""Shared for the decision tests: a catalog and envelope, a clock, and asking a decider."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from reconciler.decisions import deciding
from reconciler.state import tables
from tests.reconcile import scenario

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

CATALOG = scenario.BASE.replace(
    "tools: [{name: crm.lookup, risk: GREEN}]",
    "tools: [{name: crm.lookup, risk: GREEN}, {name: crm.update, risk: YELLOW, writes: true},"
    " {name: payments.refund, risk: RED, writes: true, external: true}, {name: shell.exec, risk: RED, writes: true}]",
)
ENVELOPE = """\
apiVersion: arm/v1
kind: PolicyEnvelope
metadata: {name: guardrails}
spec:
  scope: {kind: Tenant, name: acme}
  approvalAbove: YELLOW
  tools: {deny: [shell.exec]}
  budgets: {perCall: 1.0, perRun: 3.0}
  loop: {threshold: 3, windowSeconds: 60}
"""


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> dt.datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0


def ask(decider: deciding.Decider, tool: str, args: dict[str, object] | None = None, **kw: object) -> deciding.Decision:
    return decider.decide(deciding.Request(kw.pop("instance", "acme:app-dev-g1-0"), tool, args or {}, **kw))  # type: ignore[arg-type]


def records(decider: deciding.Decider, type_: str) -> list[tuple[str, str]]:
    c = tables.change_records.c
    with decider.db.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(c.object_name, c.after).where(c.type == type_).order_by(c.id))]  # type: ignore[misc]
