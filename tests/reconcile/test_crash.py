"""A reconcile killed with SIGKILL in the middle of its transaction leaves the database as it was.

The apply runs as a real ``armctl`` process on a fleet of 2,000 versions. The test waits until
that process is inside its transaction and has written to the database (PostgreSQL: its backend
holds a transaction id; SQLite: the write-ahead log grows past what the schema wrote), kills it,
checks nothing of the plan is visible, and lets the next run complete the apply.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from bench import fleetgen
from reconciler.audit import chain
from reconciler.state import database, tables

APP_NAME = f"arm-crash-test-{uuid.uuid4().hex[:8]}"  # its own: other test workers share the server


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            t.name: connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables.metadata.sorted_tables
        }


def _in_transaction(url: str, engine: sa.Engine, wal: Path | None, wal_start: int) -> bool:
    if wal is not None:
        return wal.exists() and wal.stat().st_size > wal_start + 512 * 1024
    with engine.connect() as connection:
        return bool(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND backend_xid IS NOT NULL"),
                {"app": APP_NAME},
            ).scalar_one()
        )


def test_a_reconcile_killed_mid_apply_leaves_nothing_and_the_next_completes(tmp_path: Path, db_url: str) -> None:
    repo = tmp_path / "fleet-repo"
    fleetgen.generate(repo, templates=200, versions_per_template=10, deployments=200)
    is_sqlite = db_url.startswith("sqlite")
    url = db_url if is_sqlite else f"{db_url}&application_name={APP_NAME}"
    engine = database.connect(db_url)
    database.migrate(engine)
    before = _counts(engine)
    wal = Path(db_url.removeprefix("sqlite:///") + "-wal") if is_sqlite else None
    wal_start = wal.stat().st_size if wal is not None and wal.exists() else 0

    env = {**os.environ, "ARM_DATABASE_URL": url, "ARM_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "reconciler", "apply", "--repo", str(repo), "--ref", "main"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_in_transaction = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if _in_transaction(url, engine, wal, wal_start):
            proc.send_signal(signal.SIGKILL)
            killed_in_transaction = True
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert killed_in_transaction, (
        f"the apply finished before it could be killed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
    )
    assert proc.returncode == -signal.SIGKILL

    engine.dispose()
    engine = database.connect(db_url)
    assert _counts(engine) == before

    done = subprocess.run([*command, "--format", "json"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    after = _counts(engine)
    assert after["agent_versions"] == 2000
    assert after["deployment_specs"] == 200
    with engine.connect() as connection:
        assert list(chain.verify(connection)) == []
        assert connection.execute(sa.select(tables.fleet_state.c.applied_sha)).scalar_one() is not None
