"""NotificationChannel manifests: what a channel may say, and the errors that name what is wrong;
the decision writer's records told through the same outbox, a repeated budget breach only once."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from reconciler.audit import chain
from reconciler.desired import repository
from reconciler.reconcile import running
from reconciler.state import database, tables
from tests import armctl
from tests.conftest import GitRepo
from tests.notifications.fleetdata import FLEET

BASE = "apiVersion: arm/v1\nkind: NotificationChannel\nmetadata: {name: hook}\nspec:\n"

BAD = [
    pytest.param(
        "  url: https://hooks.example/T000/B000/XXXX\n  format: slack\n  events: [APPROVAL_REQUESTED]\n",
        "spec.url",
        "name the environment variable that holds it ({fromEnv: SOME_VARIABLE}): a webhook URL or signing secret is a "
        "credential and is never written in Git",
        id="url-in-git",
    ),
    pytest.param(
        "  url: {fromEnv: HOOK_URL}\n  secret: {fromEnv: HOOK_KEY}\n  events: [APPROVAL_REQUESTD]\n",
        "spec.events[0]",
        "did you mean 'APPROVAL_REQUESTED'?",
        id="unknown-event",
    ),
    pytest.param(
        "  url: {fromEnv: HOOK_URL}\n  events: [EMERGENCY_PAUSE]\n",
        "spec",
        "a generic webhook's bodies are signed: name the environment variable holding the signing key",
        id="generic-unsigned",
    ),
    pytest.param(
        "  url: {fromEnv: HOOK_URL}\n  format: slack\n  events: []\n",
        "spec.events",
        "list the events the channel is told, at least one of: APPROVAL_REQUESTED",
        id="no-events",
    ),
    pytest.param(
        "  url: {fromEnv: HOOK URL}\n  format: slack\n  events: [BUDGET_EXCEEDED]\n",
        "spec.url.fromEnv",
        "should match pattern",
        id="not-a-variable-name",
    ),
    pytest.param(
        "  url: {fromEnv: HOOK_URL}\n  format: slack\n  events: [GATE_WAITING]\n  environments: [qa]\n",
        "spec.environments[0]",
        "Environment 'qa' does not exist in tenant 'acme'",
        id="unknown-environment",
    ),
]


@pytest.mark.parametrize(("spec", "field", "message"), BAD)
def test_a_bad_channel_is_refused_naming_its_file_and_field(git_repo: GitRepo, spec: str, field: str, message: str) -> None:
    git_repo.commit({"fleet/acme.yaml": FLEET, "fleet/hooks.yaml": BASE + spec})
    result = armctl.invoke(["validate", "--repo", str(git_repo.path), "--format", "json"])
    assert result.returncode == 1, result.stdout + result.stderr
    problems = result.json()["problems"]
    assert len(problems) == 1, problems
    assert problems[0]["file"] == "fleet/hooks.yaml" and problems[0]["field"] == field
    assert message in problems[0]["message"]


def test_budget_breaches_from_the_decision_writer_are_told_once_per_window(git_repo: GitRepo, db_url: str) -> None:
    channel = BASE + "  url: {fromEnv: HOOK_URL}\n  format: slack\n  events: [BUDGET_EXCEEDED]\n  environments: [dev]\n"
    git_repo.commit({"fleet/acme.yaml": FLEET, "fleet/hooks.yaml": channel})
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
        now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

        def deny(instance: str, at: dt.datetime, times: int = 1) -> None:
            record = chain.Record(tenant="acme", type="BUDGET_EXCEEDED", object_kind="Instance", object_name=instance,
                                  after={"decision": "DENY", "tool": "crm.lookup", "reasons": ["BUDGET_EXCEEDED: daily"]})  # fmt: skip
            with engine.begin() as connection:  # as the decision writer stores a batch: its DB-API cursor
                chain.append_raw(database.driver_cursor(connection), engine.dialect.name, [record] * times, at)

        deny("acme:app-dev-g1-0", now, times=3)  # one batch of three denials
        deny("acme:app-dev-g1-0", now + dt.timedelta(minutes=5))  # within the window
        deny("acme:app-dev-g1-1", now + dt.timedelta(minutes=5))  # another instance
        deny("acme:app-dev-g1-0", now + dt.timedelta(minutes=16))  # the window has passed
        o = tables.notification_outbox.c
        with engine.connect() as connection:
            told = connection.execute(sa.select(o.object_name, o.environment, o.payload).order_by(o.id)).all()
            records = connection.execute(sa.select(sa.func.count()).select_from(tables.change_records)).scalar_one()
        assert [(r.object_name, r.environment) for r in told] == [
            ("acme:app-dev-g1-0", "dev"),
            ("acme:app-dev-g1-1", "dev"),
            ("acme:app-dev-g1-0", "dev"),
        ]
        assert (
            told[0].payload["summary"]
            == "instance acme:app-dev-g1-0 exceeded its budget calling crm.lookup: BUDGET_EXCEEDED: daily"
        )
        assert records > 6  # every denial is still in the chain; only the telling is limited
    finally:
        engine.dispose()


def test_the_sample_fleets_commented_channel_is_valid_once_uncommented(git_repo: GitRepo) -> None:
    from tests.conftest import SAMPLE_FLEET

    text = (SAMPLE_FLEET / "notifications.yaml").read_text(encoding="utf-8")
    commented = text[text.index("# apiVersion:") :].splitlines()
    manifest = "\n".join(line.removeprefix("# ") for line in commented)
    git_repo.copy_tree(SAMPLE_FLEET, "fleet")
    git_repo.commit({"fleet/notifications.yaml": manifest})
    result = armctl.invoke(["validate", "--repo", str(git_repo.path), "--format", "json"])
    assert result.returncode == 0, result.stdout
    assert result.json()["counts"]["NotificationChannel"] == 1


def test_a_channel_that_is_down_holds_back_only_its_own_rows(db_url: str) -> None:
    from reconciler import clock as clock_
    from reconciler.notifications import delivering
    from tests.notifications.receiver import Receiver, free_port

    now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        row = {"tenant": "acme", "labels": {}, "digest": "0" * 64, "status": "ACTIVE", "origin": "test", "created_sha": "0" * 40,
               "updated_sha": "0" * 40, "created_at": now, "updated_at": now}  # fmt: skip
        with engine.begin() as connection:
            for name in ("down", "up"):
                spec = {"url": {"fromEnv": f"TEST_{name.upper()}_URL"}, "format": "slack", "events": ["EMERGENCY_PAUSE"]}
                connection.execute(tables.notification_channels.insert(), {**row, "name": name, "spec": spec})

        def pause(times: int) -> None:
            record = chain.Record(tenant="acme", type="EMERGENCY_PAUSE", object_kind="Tenant", object_name="acme",
                                  after={"hold": "pause", "reason": "drill"}, operator="olga")  # fmt: skip
            with database.transaction(engine) as connection:
                chain.append(connection, [record] * times, now)

        clock = clock_.FrozenClock(now)
        port = free_port()
        environ = {"TEST_DOWN_URL": f"http://127.0.0.1:{free_port()}/down", "TEST_UP_URL": f"http://127.0.0.1:{port}/up"}
        policy = delivering.Policy(batch=2)
        with Receiver(port) as receiver:
            pause(1)
            first = delivering.drain(engine, clock, environ, policy)
            assert len(first.retrying) == 1 and len(first.delivered) == 1
            pause(3)  # three more for each channel: "down"'s wait behind its first, in order
            later = delivering.drain(engine, clock, environ, policy)
        assert len(later.delivered) == 3 and later.retrying == later.failed == []
        assert len(receiver.at("/up")) == 4
        o = tables.notification_outbox.c
        with engine.connect() as connection:
            waiting = connection.execute(sa.select(o.attempts).where(o.channel == "down").order_by(o.id)).scalars().all()
        assert waiting == [1, 0, 0, 0]
    finally:
        engine.dispose()
