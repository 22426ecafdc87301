"""Races and edge cases found in review: each test failed before its fix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from reconciler import errors
from reconciler.audit import chain, integrity
from reconciler.decisions import deciding
from reconciler.oversight import approving
from reconciler.state import tables
from tests.conftest import GitRepo
from tests.decisions.calls import CATALOG, ENVELOPE, NOW, Clock
from tests.reconcile import scenario
from tests.reconcile.scenario import AUTHOR

LOOPING = ENVELOPE.replace("loop: {threshold: 3, windowSeconds: 60}", "loop: {threshold: 3, windowSeconds: 600}")


@pytest.fixture
def fleet(git_repo: GitRepo, db_url: str) -> scenario.running.Reconciler:
    git_repo.commit(scenario.first_commit_files() | {"fleet/base.yaml": CATALOG, "fleet/envelopes.yaml": LOOPING}, author=AUTHOR)
    rec = scenario.make_reconciler(db_url, git_repo)
    rec.apply("main")
    return rec


def test_one_approval_allows_one_call_even_when_asked_concurrently(fleet: scenario.running.Reconciler) -> None:
    decider = deciding.Decider(fleet.db, clock=Clock(), group_commit=True)  # type: ignore[arg-type]
    call = deciding.Request("acme:app-dev-g1-0", "payments.refund", {"amount": 7})
    first = decider.decide(call)
    assert first.decision == "NEEDS_APPROVAL" and first.approval_id is not None
    with fleet.db.begin() as connection:
        approving.decide(connection, first.approval_id, "alice", "APPROVE", "refund ok", NOW)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: decider.decide(call), range(8)))
    decider.close()
    allowed = [a for a in answers if a.decision == "ALLOW"]
    assert len(allowed) == 1 and allowed[0].approval_id == first.approval_id
    assert all(a.decision in ("NEEDS_APPROVAL", "DENY") for a in answers if a is not allowed[0])


def test_repeats_in_flight_count_towards_loop_detection(fleet: scenario.running.Reconciler) -> None:
    decider = deciding.Decider(fleet.db, clock=Clock(), group_commit=True)  # type: ignore[arg-type]
    call = deciding.Request("acme:app-dev-g1-0", "crm.lookup", {"same": True})
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: decider.decide(call), range(20)))
    decider.close()
    assert sum(1 for a in answers if a.decision == "ALLOW") <= 3
    assert any(r.startswith("LOOP_DETECTED") for a in answers for r in a.reasons)


def fail_marked_inserts(engine: sa.Engine) -> None:
    """A real database failure: inserting an op event whose payload says 'disk-full' raises."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER fail_marked BEFORE INSERT ON op_events WHEN NEW.payload LIKE '%disk-full%'"
                " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION fail_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.payload::text LIKE '%%disk-full%%' THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER fail_marked BEFORE INSERT ON op_events FOR EACH ROW EXECUTE FUNCTION fail_marked()"
            )


def test_a_decision_whose_commit_fails_is_not_answered_and_the_recorder_survives(fleet: scenario.running.Reconciler) -> None:
    decider = deciding.Decider(fleet.db, clock=Clock(), group_commit=True)  # type: ignore[arg-type]
    fail_marked_inserts(fleet.db)

    def ask(n: int) -> deciding.Decision | Exception:
        args = {"q": "disk-full" if n % 4 == 0 else "fine", "n": n}
        try:
            return decider.decide(deciding.Request("acme:app-dev-g1-0", "crm.lookup", args))
        except errors.StoreError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:  # failing and good decisions share batches
        answers = list(pool.map(ask, range(16)))
    answered = decider.decide(deciding.Request("acme:app-dev-g1-0", "crm.lookup", {"n": 99}))
    decider.close()
    failed = [a for a in answers if isinstance(a, Exception)]
    assert len(failed) == 4 and all("disk full" in str(a) for a in failed)
    ids = {a.decision_id for a in answers if isinstance(a, deciding.Decision)} | {answered.decision_id}
    with fleet.db.connect() as connection:
        stored = connection.execute(sa.select(tables.op_events.c.id).where(tables.op_events.c.type == "DECISION")).scalars().all()
    assert sorted(stored) == sorted(ids) and len(ids) == 13  # stored == answered: nothing unrecorded, nothing lost


def test_nul_characters_are_stored_cleaned_and_fail_nobody(fleet: scenario.running.Reconciler) -> None:
    decider = deciding.Decider(fleet.db, clock=Clock(), group_commit=True)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(
                lambda n: decider.decide(deciding.Request("acme:app-dev-g1-0", "crm.lookup", {"q": "a\x00b", "n": n})), range(8)
            )
        )
    decider.close()
    assert {a.decision for a in answers} == {"ALLOW"}
    with fleet.db.connect() as connection:
        payloads = (
            connection.execute(sa.select(tables.op_events.c.payload).where(tables.op_events.c.type == "DECISION")).scalars().all()
        )
    assert len(payloads) == 8 and {p["args"]["q"] for p in payloads} == {"a\ufffdb"}


# PostgreSQL only: SQLite serialises writers with its write lock, so the race cannot happen there.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_overlapping_chain_appends_get_consecutive_sequence_numbers(fleet: scenario.running.Reconciler) -> None:
    engine = fleet.db
    assert engine.dialect.name == "postgresql"
    with engine.connect() as first, engine.connect() as second:
        t1 = first.begin()
        chain.append(first, [chain.Record("acme", "TEST", "Instance", "a")], NOW)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(
                lambda: (
                    second.begin(),
                    chain.append(second, [chain.Record("acme", "TEST", "Instance", "b")], NOW),
                    second.commit(),
                )
            )
            t1.commit()
            pending.result(timeout=30)
    with engine.connect() as connection:
        assert list(chain.verify(connection)) == []


def test_editing_a_tampered_version_keeps_it_failed(fleet: scenario.running.Reconciler, git_repo: GitRepo) -> None:
    with fleet.db.begin() as connection:
        genome = connection.execute(sa.select(tables.agent_versions.c.genome)).scalar_one()
        connection.execute(tables.agent_versions.update().values(genome={**genome, "memory": {"kind": "persistent"}}))
        (tampered,) = integrity.verify_genomes(connection, NOW)  # marks FAILED, as `armctl audit verify` does
    assert tampered.newly_found
    git_repo.commit(
        {
            "fleet/app/v1.yaml": scenario.version("1.0.0", "TESTING").replace(
                "metadata: {name: app@1.0.0}", "metadata: {name: app@1.0.0, labels: {x: y}}"
            )
        },
        author=AUTHOR,
    )
    fleet.apply("main")
    assert scenario.rows(fleet.db, tables.agent_versions, "integrity") == [("FAILED",)]
    scenario.assert_cached_state_is_true(fleet)


def test_decisions_between_applies_do_not_break_the_next_apply(fleet: scenario.running.Reconciler, git_repo: GitRepo) -> None:
    decider = deciding.Decider(fleet.db, clock=Clock())  # type: ignore[arg-type]
    assert decider.decide(deciding.Request("acme:app-dev-g1-0", "shell.exec", {})).decision == "DENY"  # writes a change record
    git_repo.commit({"fleet/base.yaml": CATALOG.replace("name: tools}", "name: tools, labels: {v: '2'}}")}, author=AUTHOR)
    assert fleet.apply("main").outcome == "APPLIED"
    with fleet.db.connect() as connection:
        assert list(chain.verify(connection)) == []
