"""Benchmark: the console's server time per page on the 10k-version bench fleet.

Generates (or reuses, in ``bench/.work``) the fleet of 1,000 templates × 10 versions and 1,000
deployments (``fleetgen``), applies it to a fresh SQLite store (or ``--database`` URL) in process,
records ``--decisions`` decisions through the decider (some allowed, some denied, some needing
approval, so the approvals queue, the decision list and the per-minute counts have rows), signs
in as the fleet's operator ``alice`` and asks every console page ``--rounds`` times through the
application in process (``httpx.ASGITransport``: the server's own time, no sockets). Prints p50
and p95 per page in milliseconds, and the worst p95 against the 200 ms target. A figure printer,
not a test.

    python bench/bench_console.py [--rounds 40] [--decisions 3000] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fleetgen
import httpx

WORK = Path(__file__).resolve().parent / ".work"
TARGET_MS = 200.0


def prepare(db_url: str, decisions: int) -> tuple[Any, str, dict[str, str]]:
    """The applied fleet, an operator token, and names the pages are asked about."""
    import datetime as dt

    import sqlalchemy as sa

    from reconciler.decisions import deciding
    from reconciler.desired import caching, repository
    from reconciler.oversight import access
    from reconciler.reconcile import running
    from reconciler.state import database, tables

    repo = fleetgen.cached(WORK, 1000)
    db = database.connect(db_url)
    database.migrate(db)
    started = time.perf_counter()
    running.Reconciler(db, repository.Repository(repo), "fleet", cache=caching.ParseCache(), workers=2).apply("HEAD")
    print(f"applied the 10k-version fleet in {time.perf_counter() - started:.1f} s", flush=True)
    with db.connect() as connection:
        i, v, t = tables.instances.c, tables.agent_versions.c, tables.tool_catalogs.c
        catalog = connection.execute(sa.select(t.spec).limit(1)).scalar_one()
        instances = list(connection.execute(sa.select(i.id).where(i.state != "RETIRED").order_by(i.id).limit(200)).scalars())
        version = connection.execute(sa.select(v.name).where(v.parent.is_not(None)).order_by(v.name).limit(1)).scalar_one()
    decider = deciding.Decider(db)
    # Every tool of the catalog in turn: what the envelopes allow, deny or send for approval.
    tools = [entry["name"] for entry in catalog["tools"]]
    started = time.perf_counter()
    for n in range(decisions):
        request = deciding.Request(instances[n % len(instances)], tools[n % len(tools)], {"n": n}, 0.01, f"run-{n % 50}")
        decider.decide(request)
    print(f"recorded {decisions} decisions in {time.perf_counter() - started:.1f} s", flush=True)
    if db.dialect.name == "postgresql":
        # What autovacuum does after a bulk load: without statistics and a visibility map the
        # planner reads the versions' wide rows where an index would do.
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    with db.begin() as connection:
        token = access.create(connection, "console-bench", "operator", fleetgen.TENANT, dt.datetime.now(dt.UTC), operator="alice")
    return db, token, {"instance": instances[0], "version": version, "tool": tools[-1]}


async def measure(db: Any, token: str, names: dict[str, str], rounds: int) -> list[tuple[str, list[float]]]:
    from reconciler.server import app

    application = app.create_app(db, sweep_seconds=None, policy_seconds=None)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        signed = await client.post("/ui/login", data={"token": token})
        assert signed.status_code == 303, signed.text
        page = await client.get("/ui/simulate")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        simulate = {"csrf": csrf.group(1), "target": "instance", "name": names["instance"], "tool": names["tool"],
                    "args": '{"amount": 12}', "cost": "0.5"}  # fmt: skip
        pages: list[tuple[str, str, dict[str, str] | None]] = [
            ("overview", "/ui/", None),
            ("versions", "/ui/versions", None),
            ("versions, page 150", "/ui/versions?page=150", None),
            ("version scorecard", f"/ui/versions/{names['version']}", None),
            ("deployments", "/ui/deployments", None),
            ("deployments, page 15", "/ui/deployments?page=15", None),
            ("approvals (pending)", "/ui/approvals", None),
            ("approvals (all)", "/ui/approvals?status=all", None),
            ("instances", "/ui/instances", None),
            ("instances, page 40", "/ui/instances?page=40", None),
            ("instance", f"/ui/instances/{names['instance']}", None),
            ("audit trail", "/ui/audit", None),
            ("audit, by type", "/ui/audit?type=DEPLOYMENT_ACTIVATED", None),
            ("decisions", "/ui/decisions", None),
            ("decisions, DENY of one instance", f"/ui/decisions?result=DENY&instance={names['instance']}", None),
            ("simulator (ask)", "/ui/simulate", simulate),
        ]
        figures = []
        for label, path, form in pages:
            times = []
            for _ in range(rounds + 3):
                started = time.perf_counter()
                answer = await (client.post(path, data=form) if form else client.get(path))
                times.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise SystemExit(f"{label}: {path} answered {answer.status_code}: {answer.text[:500]}")
            figures.append((label, times[3:]))  # the first three warm caches
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--database", default=None, help="a database URL (default: SQLite in a scratch directory)")
    parser.add_argument("--keep", default=None, help="keep the SQLite store in this directory and reuse it next time")
    args = parser.parse_args()
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="arm-bench-console-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        url = args.database or f"sqlite:///{scratch / 'arm.db'}"
        if args.keep and (scratch / "names.json").exists():
            from reconciler.state import database

            kept = json.loads((scratch / "names.json").read_text())
            db, token, names = database.connect(url), kept.pop("token"), kept
        else:
            db, token, names = prepare(url, args.decisions)
            if args.keep:
                (scratch / "names.json").write_text(json.dumps({"token": token, **names}))
        figures = asyncio.run(measure(db, token, names, args.rounds))
        print(f"console pages, {args.rounds} requests each, server time in process ({db.dialect.name})")
        print(f"  {'page':34} {'p50 ms':>8} {'p95 ms':>8}")
        worst = 0.0
        for label, times in figures:
            p95 = statistics.quantiles(times, n=20)[18]
            worst = max(worst, p95)
            print(f"  {label:34} {statistics.median(times):8.1f} {p95:8.1f}")
        verdict = "within" if worst <= TARGET_MS else "ABOVE"
        print(f"  worst p95 {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
