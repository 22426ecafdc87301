"""Notifications end to end: NotificationChannels applied from Git, an outbox written with the
change records it tells, delivered to a real receiver on loopback (down, then back), signed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from reconciler import clock as clock_
from reconciler import errors
from reconciler.desired import repository
from reconciler.notifications import delivering
from reconciler.oversight import access, approving, holds
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.state import database, tables
from tests.cli.sample import Armctl
from tests.conftest import GitRepo
from tests.notifications.fleetdata import FLEET
from tests.notifications.receiver import Receiver, free_port
from tests.server.serving import Server
from tests.server.serving import auth as bearer

SECRET = "hook-signing-key-that-never-reaches-the-store"


CHANNELS = """\
apiVersion: arm/v1
kind: NotificationChannel
metadata: {name: ops-hook}
spec:
  url: {fromEnv: TEST_HOOK_URL}
  secret: {fromEnv: TEST_HOOK_SECRET}
  events: [APPROVAL_REQUESTED, GATE_WAITING, EMERGENCY_PAUSE, EMERGENCY_RELEASE, RECONCILE_FAILED]
---
apiVersion: arm/v1
kind: NotificationChannel
metadata: {name: prod-chat}
spec:
  url: {fromEnv: TEST_CHAT_URL}
  format: slack
  events: [APPROVAL_REQUESTED, GATE_WAITING, EMERGENCY_PAUSE]
  environments: [prod]
---
apiVersion: arm/v1
kind: NotificationChannel
metadata: {name: nowhere}
spec:
  url: {fromEnv: TEST_UNSET_URL}
  secret: {fromEnv: TEST_HOOK_SECRET}
  events: [EMERGENCY_PAUSE]
"""


def _outbox(engine: sa.Engine) -> list[dict[str, object]]:
    o = tables.notification_outbox
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(o).order_by(o.c.id)).mappings()]


def _told(engine: sa.Engine) -> list[tuple[str, str, str | None]]:
    return [(str(r["channel"]), str(r["event"]), r["environment"]) for r in _outbox(engine)]  # type: ignore[misc]


def test_every_notification_reaches_a_receiver_that_was_down_exactly_once(tmp_path: Path, git_repo: GitRepo, db_url: str) -> None:
    git_repo.commit({"fleet/acme.yaml": FLEET, "fleet/channels.yaml": CHANNELS})
    clock = clock_.FrozenClock(dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        reconciler = running.Reconciler(engine, repository.Repository(git_repo.path), "fleet", clock=clock)
        reconciler.apply("main")

        # The deployment to prod waits for an approval: both told, with its environment, to the
        # channels that want them (prod-chat is limited to prod); told once, not on every apply.
        expected = [
            ("ops-hook", "APPROVAL_REQUESTED", "prod"),
            ("prod-chat", "APPROVAL_REQUESTED", "prod"),
            ("ops-hook", "GATE_WAITING", "prod"),
            ("prod-chat", "GATE_WAITING", "prod"),
        ]
        assert _told(engine) == expected
        clock.advance(1)
        git_repo.commit(message="an empty commit")
        reconciler.apply("main")
        assert _told(engine) == expected

        # Denied, the deployment waits for another reason: told again, once.
        with database.transaction(engine) as connection:
            (approval,) = connection.execute(sa.select(tables.approvals.c.id)).scalars()
            approving.decide(connection, approval, "olga", "DENY", "not this week", clock.now())
        for _ in range(2):
            clock.advance(1)
            reconciler.apply("main")
        expected += [("ops-hook", "GATE_WAITING", "prod"), ("prod-chat", "GATE_WAITING", "prod")]
        assert _told(engine) == expected
        denied = _outbox(engine)[-1]["payload"]
        assert (
            denied["summary"]
            == f"Deployment app-prod waits: none -> app@1.0.0: approval {approval} was denied by olga: not this week"
        )  # type: ignore[index]

        # An emergency control: told to the channels that want dev's pauses (not prod-chat).
        with database.transaction(engine) as connection:
            holds.control_instance(connection, "acme:app-dev-g1-0", "pause", "olga", "leaking data", clock.now())
        expected += [("nowhere", "EMERGENCY_PAUSE", "dev"), ("ops-hook", "EMERGENCY_PAUSE", "dev")]
        assert _told(engine) == expected

        # A control whose transaction rolls back tells nothing.
        with pytest.raises(RuntimeError), database.transaction(engine) as connection:
            holds.control_instance(connection, "acme:app-dev-g1-1", "pause", "olga", "rolled back", clock.now())
            assert len(_outbox_in(connection)) == len(expected) + 2  # written in the transaction...
            raise RuntimeError("the caller fails after the control")
        assert _told(engine) == expected  # ...and gone with it

        with database.transaction(engine) as connection:
            holds.control_instance(connection, "acme:app-dev-g1-0", "resume", "olga", "fixed", clock.now())
        expected.append(("ops-hook", "EMERGENCY_RELEASE", "dev"))

        # The kill switch: told once, for the tenant, to every channel that wants pauses, whatever
        # its environments (prod-chat too); its instances' own records are not told one by one.
        with database.transaction(engine) as connection:
            holds.control_tenant(connection, "acme", "pause", "olga", "incident 7", clock.now())
        with database.transaction(engine) as connection:
            holds.control_tenant(connection, "acme", "resume", "olga", "incident 7 over", clock.now())
        expected += [("nowhere", "EMERGENCY_PAUSE", None), ("ops-hook", "EMERGENCY_PAUSE", None),
                     ("prod-chat", "EMERGENCY_PAUSE", None), ("ops-hook", "EMERGENCY_RELEASE", None)]  # fmt: skip

        # A commit that cannot be applied: told once, however often it is retried.
        git_repo.commit({"fleet/broken.yaml": "apiVersion: arm/v1\nkind: Tennant\nmetadata: {name: x}\n"})
        for _ in range(2):
            with pytest.raises(errors.ValidationFailed):
                reconciler.apply("main")
        expected.append(("ops-hook", "RECONCILE_FAILED", None))
        assert _told(engine) == expected

        # The receiver is down: each channel is tried once (its later rows wait with it), the
        # channel without a URL fails on its own.
        port = free_port()
        environ = {"TEST_HOOK_URL": f"http://127.0.0.1:{port}/hook", "TEST_CHAT_URL": f"http://127.0.0.1:{port}/chat",
                   "TEST_HOOK_SECRET": SECRET}  # fmt: skip
        policy = delivering.Policy(max_attempts=2, timeout_seconds=5)
        passed = delivering.deliver_due(engine, clock, environ, policy)
        assert len(passed.retrying) == 3 and passed.delivered == [] and len(passed.deferred) == len(expected) - 3
        rows = {r["id"]: r for r in _outbox(engine)}
        first_hook = min(i for i, r in rows.items() if r["channel"] == "ops-hook")
        assert rows[first_hook]["attempts"] == 1 and "Connection refused" in str(rows[first_hook]["last_error"])
        assert "127.0.0.1" not in str(rows[first_hook]["last_error"])  # no URL (a credential) in what is stored
        assert all(r["status"] == "PENDING" for r in rows.values())
        assert delivering.deliver_due(engine, clock, environ, policy).as_dict() == delivering.Passed().as_dict()  # backing off

        # It comes back: after the backoff every notification arrives, once, in order, signed.
        clock.advance(policy.backoff(1))
        with Receiver(port) as receiver:
            passed = delivering.drain(engine, clock, environ, policy)
            assert delivering.drain(engine, clock, environ, policy).as_dict() == delivering.Passed().as_dict()
        # nowhere's first row is given up on after its second attempt; its next one then fails
        # its first and waits out its backoff.
        assert len(passed.delivered) == len(expected) - 2 and len(passed.failed) == 1 and len(passed.retrying) == 1
        hook, chat = receiver.at("/hook"), receiver.at("/chat")
        assert [json.loads(r.body)["event"] for r in hook] == [e for c, e, _ in expected if c == "ops-hook"]
        ids = [int(r.headers["x-arm-delivery"]) for r in receiver.received]
        assert len(ids) == len(set(ids)) == len(expected) - 2
        for got in hook:
            assert delivering.verify(SECRET, got.body, got.headers["x-arm-signature-256"])
            assert not delivering.verify("another key", got.body, got.headers["x-arm-signature-256"])
            document = json.loads(got.body)
            assert document["id"] == int(got.headers["x-arm-delivery"]) and document["channel"] == "ops-hook"
            assert got.headers["x-arm-event"] == document["event"] and document["summary"]
        paused = next(json.loads(r.body) for r in hook if json.loads(r.body)["event"] == "EMERGENCY_PAUSE")
        assert paused["tenant"] == "acme" and paused["environment"] == "dev"
        assert paused["object"] == {"kind": "Instance", "name": "acme:app-dev-g1-0"}
        assert paused["record"]["operator"] == "olga" and paused["details"]["reason"] == "leaking data"
        assert [json.loads(r.body)["text"].split(":")[0] for r in chat] == [
            "[ARM] APPROVAL_REQUESTED (acme/prod)",
            "[ARM] GATE_WAITING (acme/prod)",
            "[ARM] GATE_WAITING (acme/prod)",
            "[ARM] EMERGENCY_PAUSE (acme)",
        ]
        assert json.loads(chat[-1].body)["text"] == "[ARM] EMERGENCY_PAUSE (acme): Tenant acme paused by olga: incident 7"
        assert all("x-arm-signature-256" not in r.headers for r in chat)  # no key named: unsigned
        stored = _outbox(engine)
        assert SECRET not in repr(stored)

        # What operators see: the CLI and the API, the channel that gave up included.
        armctl = Armctl(tmp_path, db_url, git_repo)
        listed = armctl.json("notifications", "list")["notifications"]
        assert [(n["channel"], n["event"], n["status"]) for n in reversed(listed)] == [
            (c, e, "DELIVERED" if c != "nowhere" else "FAILED" if env == "dev" else "PENDING") for c, e, env in expected
        ]
        failed = armctl.ok("notifications", "list", "--status", "failed").stdout
        assert "gave up after 2 attempts: environment variable TEST_UNSET_URL (the channel's URL) is not set" in failed
        # Run by hand (on the system's clock, past every backoff), a pass tries what is due: only
        # nowhere's second row, which has no URL either and waits again.
        gave_up, waiting = [r["id"] for r in stored if r["channel"] == "nowhere"]
        assert armctl.json("notifications", "deliver") == {"delivered": [], "retrying": [waiting], "failed": [], "deferred": []}
        with engine.begin() as connection:
            operator = access.create(connection, "ops", "operator", "acme", clock.now(), operator="olga")
            runtime = access.create(connection, "rt", "runtime", "acme", clock.now())
        with Server(server_app.create_app(engine, clock=clock)) as base, httpx.Client(base_url=base, timeout=10) as client:
            answer = client.get("/v1/notifications", params={"status": "failed"}, headers=bearer(operator)).json()
            assert [(n["id"], n["channel"], n["attempts"]) for n in answer["notifications"]] == [(gave_up, "nowhere", 2)]
            page = client.get("/v1/notifications", params={"limit": 2}, headers=bearer(operator)).json()
            assert len(page["notifications"]) == 2 and page["next"] == page["notifications"][-1]["id"]
            assert client.get("/v1/notifications", headers=bearer(runtime)).status_code == 403
            metrics = client.get("/metrics").text
            assert 'arm_notifications_unsent{status="pending"} 1' in metrics
            assert 'arm_notifications_unsent{status="failed"} 1' in metrics

        # Once its receiver is fixed, what the worker gave up on is sent again from its first attempt.
        assert armctl.json("notifications", "retry", "--failed") == {"requeued": [gave_up]}
        assert (
            armctl.refused("notifications", "retry", str(gave_up))
            == f"Conflict: notification {gave_up} is already waiting to be sent"
        )
        assert armctl.refused("notifications", "retry", "424242") == "NotFound: no notification 424242"
        environ["TEST_UNSET_URL"] = f"http://127.0.0.1:{port}/late"
        clock.advance((dt.datetime.now(dt.UTC) - clock.now()).total_seconds() + 60)  # the CLI's times: due now, and soon
        with Receiver(port) as receiver:
            assert delivering.drain(engine, clock, environ, policy).delivered == [gave_up, waiting]
        assert [json.loads(r.body)["object"]["kind"] for r in receiver.at("/late")] == ["Instance", "Tenant"]
    finally:
        engine.dispose()


def _outbox_in(connection: sa.Connection) -> list[object]:
    return list(connection.execute(sa.select(tables.notification_outbox.c.id)).scalars())
