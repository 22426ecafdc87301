"""Benchmark: what notifications cost the writers, and how fast the worker drains the outbox.

Parts, each on a fresh SQLite database (``--store postgresql``: a scratch schema on
127.0.0.1:5432, dropped afterwards) holding one tenant:

- writers: ``audit.chain.append`` of ``--records`` change records, 100 per transaction, of a type
  no channel is told (``APPROVAL_DECIDED``) and of one every channel wants (``EMERGENCY_PAUSE`` of
  an instance, so the instance's environment is looked up), with 0 and with 3 NotificationChannels
  applied: records/s for each, and the outbox rows written. The first is what every writer pays
  when nobody subscribes; the decision writer's records (``append_raw``) take the same path.
- drain: ``--rows`` outbox rows for one generic (signed) channel, drained by
  ``notifications.delivering.drain`` into a real HTTP receiver on loopback (the standard library's
  threading server): deliveries/s, each one a signed POST and its recorded outcome.

A figure printer, not a test. Ratios hold better than absolute numbers on a busy host.

    python bench/bench_notifications.py [--records 5000] [--rows 1000] [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import clock as clock_
from reconciler.audit import chain
from reconciler.notifications import delivering
from reconciler.state import database, tables

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _fresh(store: str, tmp: Path) -> tuple[sa.Engine, Any]:
    if store == "sqlite":
        engine = database.connect(f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}")
        database.migrate(engine)
        return engine, None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine = database.connect(f"{POSTGRES}?options=-csearch_path%3D{schema}")
    database.migrate(engine)

    def drop() -> None:
        engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    return engine, drop


def _seed(engine: sa.Engine, channels: int) -> None:
    row = {"tenant": "acme", "labels": {}, "digest": "0" * 64, "status": "ACTIVE", "origin": "bench", "created_sha": "0" * 40,
           "updated_sha": "0" * 40, "created_at": NOW, "updated_at": NOW}  # fmt: skip
    with engine.begin() as connection:
        connection.execute(tables.deployments.insert(), {
            "id": 1, "tenant": "acme", "name": "app-dev", "generation": 1, "template": "app", "environment": "dev",
            "version": "app@1", "replicas": 1, "strategy": {}, "state": "ACTIVE", "created_sha": "0" * 40,
            "updated_sha": "0" * 40, "created_at": NOW, "updated_at": NOW})  # fmt: skip
        connection.execute(tables.instances.insert(), {
            "id": "acme:app-dev-g1-0", "tenant": "acme", "deployment_id": 1, "deployment": "app-dev", "environment": "dev",
            "template": "app", "version": "app@1", "state": "ACTIVE", "health": "UNKNOWN", "created_sha": "0" * 40,
            "created_at": NOW, "updated_at": NOW})  # fmt: skip
        for i in range(channels):
            spec = {"url": {"fromEnv": "BENCH_HOOK_URL"}, "secret": {"fromEnv": "BENCH_HOOK_KEY"}, "format": "generic",
                    "events": ["EMERGENCY_PAUSE", "APPROVAL_REQUESTED"], "environments": None}  # fmt: skip
            connection.execute(tables.notification_channels.insert(), {**row, "name": f"hook-{i}", "spec": spec})


def writers(store: str, tmp: Path, records: int) -> None:
    print(f"writers ({store}, {records} records, 100 per transaction):")
    for channels in (0, 3):
        for kind in ("APPROVAL_DECIDED", "EMERGENCY_PAUSE"):
            engine, drop = _fresh(store, tmp)
            try:
                _seed(engine, channels)
                after = {"state": "PAUSED", "control": "pause", "reason": "bench"}
                batch = [chain.Record(tenant="acme", type=kind, object_kind="Instance", object_name="acme:app-dev-g1-0",
                                      after=after, operator="olga")] * 100  # fmt: skip
                started = time.perf_counter()
                for _ in range(records // 100):
                    with database.transaction(engine) as connection:
                        chain.append(connection, batch, NOW)
                seconds = time.perf_counter() - started
                with engine.connect() as connection:
                    rows = connection.execute(sa.select(sa.func.count()).select_from(tables.notification_outbox)).scalar_one()
                print(f"  {channels} channels, {kind:17} {records / seconds:9,.0f} records/s   outbox rows written: {rows:,}")
            finally:
                drop() if drop else engine.dispose()


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Sink.count += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def drain(store: str, tmp: Path, rows: int) -> None:
    engine, drop = _fresh(store, tmp)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _seed(engine, 1)
        record = chain.Record(tenant="acme", type="EMERGENCY_PAUSE", object_kind="Instance", object_name="acme:app-dev-g1-0",
                              after={"state": "PAUSED", "control": "pause", "reason": "bench"}, operator="olga")  # fmt: skip
        for _ in range(rows // 100):
            with database.transaction(engine) as connection:
                chain.append(connection, [record] * 100, NOW)
        environ = {"BENCH_HOOK_URL": f"http://127.0.0.1:{server.server_address[1]}/hook", "BENCH_HOOK_KEY": "k" * 32}
        started = time.perf_counter()
        passed = delivering.drain(engine, clock_.FrozenClock(NOW + dt.timedelta(seconds=1)), environ)
        seconds = time.perf_counter() - started
        print(f"drain ({store}): {len(passed.delivered):,} delivered of {rows:,} in {seconds:.2f} s = "
              f"{len(passed.delivered) / seconds:,.0f} deliveries/s (receiver counted {_Sink.count:,})")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        drop() if drop else engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        writers(args.store, Path(tmp), args.records)
        drain(args.store, Path(tmp), args.rows)


if __name__ == "__main__":
    main()
