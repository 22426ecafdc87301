"""``armctl token create | revoke`` and ``armctl decide --cost`` refuse what they cannot honour:
a real process over the sample fleet applied to a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reconciler.state import tables
from tests.cli.sample import Armctl, applied_sample
from tests.conftest import GitRepo

DEV = "acme:support-agent-dev-g1-0"


@pytest.fixture
def armctl(tmp_path: Path, sample_repo: GitRepo, db_url: str) -> Iterator[Armctl]:
    applied = applied_sample(tmp_path, db_url, sample_repo)
    yield applied
    applied.engine.dispose()


def stored(armctl: Armctl) -> list[dict[str, object]]:
    k = tables.api_tokens.c
    return armctl.rows(sa.select(k.name, k.kind, k.operator, k.scope, k.revoked_at).order_by(k.id))


def test_an_operator_token_without_operator_is_a_usage_error(armctl: Armctl) -> None:
    refused = armctl.refused("token", "create", "--name", "ops", "--kind", "operator", "--tenant", "acme")
    assert refused.startswith("Usage: armctl token create")
    assert refused.endswith("Error: --operator is required for operator tokens: name the Operator the token acts as")
    assert "None" not in refused
    assert stored(armctl) == []
    made = armctl.ok("token", "create", "--name", "ops", "--kind", "operator", "--tenant", "acme", "--operator", "dev-patel")
    assert made.stdout.startswith("arm_")
    assert [(t["kind"], t["operator"]) for t in stored(armctl)] == [("operator", "dev-patel")]


def test_a_token_is_limited_only_to_instances_that_exist_in_its_tenant(armctl: Armctl) -> None:
    create = ("token", "create", "--name", "rt", "--kind", "runtime", "--tenant", "acme")
    assert armctl.refused(*create, "--instance", DEV, "--instance", "bogus-instance") == (
        "NotFound: instance 'bogus-instance' does not exist in tenant 'acme'"
    )
    assert armctl.refused(*create, "--instance", "b", "--instance", "a") == (
        "NotFound: instances 'a', 'b' do not exist in tenant 'acme'"
    )
    assert stored(armctl) == []
    made = armctl.json(*create, "--instance", DEV)
    assert (made["name"], made["kind"], made["tenant"]) == ("rt", "runtime", "acme") and made["token"].startswith("arm_")
    assert [t["scope"] for t in stored(armctl)] == [{"instances": [DEV]}]


def test_revoking_a_token_that_does_not_exist_exits_1(armctl: Armctl) -> None:
    assert armctl.refused("token", "revoke", "--name", "nosuch") == (
        "NotFound: no token is named 'nosuch' (see the --name it was created with)"
    )
    armctl.ok("token", "create", "--name", "rt", "--kind", "runtime", "--tenant", "acme")
    assert armctl.ok("token", "revoke", "--name", "rt").stdout == "Revoked 1 token named 'rt'.\n"
    (token,) = stored(armctl)
    assert token["revoked_at"] is not None
    again = armctl.ok("token", "revoke", "--name", "rt")
    assert "already revoked" in again.stdout


def test_decide_refuses_a_cost_the_api_would_refuse_before_recording_anything(armctl: Armctl) -> None:
    for cost in ("-1", "-0.01", "nan", "inf"):
        refused = armctl.refused("decide", "--instance", DEV, "--tool", "kb.search-articles", "--cost", cost)
        assert "Invalid value for '--cost'" in refused and refused.startswith("Usage: armctl decide")
    assert armctl.rows(sa.select(tables.op_events.c.id)) == []  # no DECISION event: nothing was asked
