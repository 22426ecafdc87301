"""What a decision stores (op event, DENY change record) holds no secret, reasons included."""

from __future__ import annotations

import sqlalchemy as sa

from reconciler.decisions import deciding
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.decisions.calls import Clock
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR

TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"

CATALOG = scenario.BASE.replace(
    "tools: [{name: crm.lookup, risk: GREEN}]",
    "tools: [{name: crm.lookup, risk: GREEN}, {name: email.send, risk: YELLOW, external: true}]",
)

# A fleet rule that quotes an argument in its reason, as Acme's email rule does.
ECHO = """\
package arm.ext.team

import rego.v1

deny contains msg if {
	input.tool.name == "email.send"
	some rcpt in input.args.to
	not endswith(rcpt, "@acme.example")
	msg := sprintf("email.send may only reach acme.example addresses (not %s)", [rcpt])
}
"""


def _decider(git_repo: GitRepo, db_url: str) -> deciding.Decider:
    files = scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/policies/team.rego": ECHO}
    git_repo.commit(files, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    return deciding.Decider(rec.db, clock=Clock())  # type: ignore[arg-type]


def _stored(decider: deciding.Decider, decision_id: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    e, c = tables.op_events.c, tables.change_records.c
    with decider.db.connect() as connection:
        payload = connection.execute(sa.select(e.payload).where(e.id == decision_id)).scalar_one()
        afters = [r.after for r in connection.execute(sa.select(c.after).where(c.type == "POLICY_EVALUATED"))]
    return payload, afters


def test_a_secret_quoted_in_a_reason_is_stored_redacted_but_answered_as_is(git_repo: GitRepo, db_url: str) -> None:
    decider = _decider(git_repo, db_url)
    request = deciding.Request("acme:app-dev-g1-0", "email.send", {"to": [f"{TOKEN}@evil.com"]})
    decision = decider.decide(request)
    assert decision.decision == "DENY"
    # The answer goes back to the caller, whose own data it is: it keeps the reason as written.
    assert decision.reasons == [f"email.send may only reach acme.example addresses (not {TOKEN}@evil.com)"]
    payload, afters = _stored(decider, decision.decision_id)
    assert TOKEN not in str(payload) and len(afters) == 1 and TOKEN not in str(afters[0])
    # The whole argument was taken out of the stored args, so it is taken out of the reason too.
    assert payload["reasons"] == ["email.send may only reach acme.example addresses (not [REDACTED])"]
    assert afters[0]["reasons"] == payload["reasons"]
    assert payload["args"] == {"to": ["[REDACTED]"]}


def test_secrets_found_only_by_their_key_are_not_stored(git_repo: GitRepo, db_url: str) -> None:
    decider = _decider(git_repo, db_url)
    args = {
        "password": "12345",
        "connection_string": "postgresql://admin:hunter2@db.prod.acme/app",
        "cookie": "session=abc123def456",
    }
    decision = decider.decide(deciding.Request("acme:app-dev-g1-0", "crm.lookup", args))
    payload, _ = _stored(decider, decision.decision_id)
    assert decision.risk is not None and decision.risk["level"] == "RED"
    for secret in ("12345", "hunter2", "abc123def456"):
        assert secret not in str(payload)
