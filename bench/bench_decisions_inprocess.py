"""Benchmark: the decision route's own cost, driven in process without sockets or HTTP parsing.

``bench_decisions.py`` measures what a runtime sees through ``wrk``; this one hands request
bodies to the same application (``server.app.create_app``: the decision route as the server's
HTTP protocol calls it, the decider, the group commit into SQLite, the embedded engine) from
coroutines on uvloop, on the same fleet, so the difference between the two is what HTTP and the
kernel's loopback cost. It prints
decisions/s and the process's CPU time per decision with 1 and with 16 concurrent callers, and
checks that every decision was stored. Pin it to a core (``taskset -c 1``) to compare with the
server's figures. A figure printer, not a test.

    taskset -c 1 python bench/bench_decisions_inprocess.py [--seconds 6] [--mix allow|catalog]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench_decisions
import sqlalchemy as sa
import uvloop


async def drive(application: Any, calls: list[tuple[str, str]], token: str, seconds: float) -> dict[str, Any]:
    route = application.decision_route  # what the server's HTTP protocol hands each request body
    authorization = f"Bearer {token}"
    counter = {"n": 0}
    loop = asyncio.get_running_loop()

    async def one() -> None:
        counter["n"] += 1
        n = counter["n"]
        instance, tool = calls[n % len(calls)]
        body = f'{{"instance":"{instance}","tool":"{tool}","args":{{"n":{n}}},"costEstimate":0.01}}'.encode()
        answered: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        route.answer_soon(body, authorization, lambda status, answer: answered.set_result((status, answer)))
        status, answer = await answered
        if status != 200:
            raise SystemExit(f"a decision failed: {status} {answer!r}")

    async def caller(until: float) -> None:
        while time.perf_counter() < until:
            await one()

    figures = {}
    async with application.router.lifespan_context(application):
        for _ in range(200):  # warm: the resolution, the ledger, the token cache
            await one()
        for concurrency in (1, 16):
            start, wall, cpu = counter["n"], time.perf_counter(), time.process_time()
            await asyncio.gather(*[caller(wall + seconds) for _ in range(concurrency)])
            made = counter["n"] - start
            figures[concurrency] = (made / (time.perf_counter() - wall), (time.process_time() - cpu) / made * 1e6)
    figures["total"] = counter["n"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--mix", choices=["allow", "catalog"], default="allow")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="arm-decisions-inprocess-"))
    try:
        calls, token = bench_decisions.prepare(state, args.mix)
        os.environ["ARM_STATE_DIR"] = str(state)
        from reconciler import settings as settings_
        from reconciler.cli import deciding as deciding_cli
        from reconciler.decisions import deciding
        from reconciler.server import app
        from reconciler.state import database

        db = database.connect(f"sqlite:///{state / 'arm.db'}")
        decider = deciding.Decider(db, engine=deciding_cli.policy_engine(settings_.Settings()), group_commit=True)
        try:
            figures = uvloop.run(drive(app.create_app(db, decider=decider), calls, token, args.seconds))
        finally:
            decider.close()
        with db.connect() as connection:
            stored = connection.execute(sa.text("SELECT count(*) FROM op_events WHERE type = 'DECISION'")).scalar_one()
        print(f"decisions in process ({args.mix} mix), {len(calls)} instances, SQLite, {args.seconds:g} s per run")
        for concurrency in (1, 16):
            rate, cpu = figures[concurrency]
            print(f"  {concurrency:2d} callers  {rate:8.0f} decisions/s  {cpu:6.1f} µs of CPU each")
        verdict = "equal" if stored == figures["total"] else f"{stored - figures['total']:+d} MISMATCH"
        print(f"  stored decision events {stored} vs decisions made {figures['total']}: {verdict}")
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
