"""Benchmark: POST /v1/decisions under load, with wrk pinned to one core and the server to the other.

Builds a fleet of ~1,000 instances (``fleetgen``: 334 templates, 3 replicas each) carrying the
sample fleet's Rego rules (``fleet/policies``), applies it
to a fresh SQLite store, creates a runtime token, starts ``armctl serve`` pinned to CPU 1 and
drives it with ``wrk`` pinned to CPU 0 (Debian package ``wrk``): 1 connection for latency,
16 connections for throughput and tail latency. Afterwards it checks that the number of stored
decision events equals the number of decisions the server answered (its /metrics count), and prints the embedded engine's
in-process decisions/s as the floor. Targets: ≥ 6,000 decisions/s at 16 connections, p50 ≤
0.3 ms at 1 connection, p99 ≤ 7 ms at 16 connections. A figure printer, not a test.

    python bench/bench_decisions.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fleetgen
import sqlalchemy as sa

WORK = Path(__file__).resolve().parent / ".work"
ROOT = Path(__file__).resolve().parent.parent

LUA = """
local instances = {%s}
local tools = {%s}
local n = 0
request = function()
  n = n + 1
  local i = (n %% #instances) + 1
  local body = string.format('{"instance":"%%s","tool":"%%s","args":{"n":%%d},"costEstimate":0.01}',
    instances[i], tools[i], n)
  return wrk.format("POST", "/v1/decisions", {["Content-Type"]="application/json", ["Authorization"]="Bearer %s"}, body)
end
"""


def armctl(state: Path, *args: str) -> str:
    env = {**os.environ, "ARM_STATE_DIR": str(state)}
    out = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode not in (0,):
        raise SystemExit(f"armctl {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_wrk(url: str, script: Path, connections: int, seconds: int, server: int) -> dict[str, float]:
    """wrk's figures, and the server's (pid ``server``) CPU per request while it ran."""
    before = cpu_seconds(server)
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = cpu_seconds(server)
    figures: dict[str, float] = {}
    for label, key in (("50%", "p50"), ("99%", "p99")):
        m = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m:
            value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            figures[key] = value
    m = re.search(r"(\d+) requests in", out)
    figures["requests"] = float(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(m.group(1)) if m else 0
    if figures["requests"]:
        figures["user_us"] = (after[0] - before[0]) / figures["requests"] * 1e6
        figures["sys_us"] = (after[1] - before[1]) / figures["requests"] * 1e6
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["errors"] = float(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    if m:
        print(f"  wrk (c={connections}) socket errors: {m.group(1)}")
    if "p99" not in figures:
        print("  wrk printed no latency percentiles:\n" + out)
    return figures


def with_sample_rego(generated: Path, state: Path) -> Path:
    """A clone of the generated fleet that also carries the sample fleet's Rego rules
    (``fleet/policies``, tests left out): the sample fleet, scaled, evaluates them on every decision."""
    clone = state / "fleet-repo"
    subprocess.run(["git", "clone", "-q", str(generated), str(clone)], check=True)
    target = clone / "fleet" / "policies"
    target.mkdir(parents=True, exist_ok=True)
    for module in (ROOT / "fleet" / "policies").glob("*.rego"):
        if not module.name.endswith("_test.rego"):
            shutil.copy(module, target / module.name)
    git = ["git", "-C", str(clone), "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the sample fleet's Rego rules"], check=True)
    return clone


def server_answered(url: str) -> dict[str, int]:
    """Decisions the server answered, by result, from its /metrics counters."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'^arm_decisions_total\{decision="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {result: int(float(n)) for result, n in found}


def engine_floor(state: Path) -> float:
    from reconciler.policy import engines, inputs, library

    engine = engines.EmbeddedEngine()
    rules = {f"fleet/policies/{m.name}": m.read_text() for m in (ROOT / "fleet" / "policies").glob("*.rego")}
    engine.load(engines.Bundle(library.modules_for(rules, tests=False), {}, "floor"))
    envelope = {
        "maxRisk": "RED", "approvalAbove": "YELLOW", "tools": {"allow": None, "deny": ["shell.exec"], "requireApproval": []},
        "budgets": {"perCall": 1.0, "perRun": None, "daily": 50.0}, "loop": {"threshold": 10, "windowSeconds": 60},
        "approvals": {}, "sources": [],
    }  # fmt: skip
    context = inputs.Context({"id": "i", "state": "ACTIVE", "tenant": "t", "template": "x", "version": "x@1"}, {"name": "dev", "production": False},
                               {"name": "crm.lookup", "risk": "GREEN"}, envelope)  # fmt: skip
    document, assessment = inputs.build_input(context, "crm.lookup", {"n": 1}, 0.01)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 2.0:
        inputs.evaluate(engine, document, assessment)
        count += 1
    return count / (time.perf_counter() - started)


def _allowed_calls(rows: list[Any], catalog: dict[str, Any], mix: str) -> list[tuple[str, str]]:
    """(instance, tool) pairs: with ``mix == "allow"`` a GREEN tool each instance's envelope allows
    without approval; instances without one are left out."""
    green = [t["name"] for t in catalog["tools"] if t["risk"] == "GREEN"]
    calls = []
    for n, (instance, envelope) in enumerate(rows):
        if mix == "catalog":
            calls.append((instance, green[n % min(8, len(green))]))
            continue
        rules = (json.loads(envelope) if isinstance(envelope, str) else envelope or {}).get("tools") or {}
        allowed = rules.get("allow")
        refused = set(rules.get("deny") or []) | set(rules.get("requireApproval") or [])
        usable = [t for t in green if (allowed is None or t in allowed) and t not in refused]
        if usable:
            calls.append((instance, usable[n % len(usable)]))
    if not calls:
        raise SystemExit("no instance has a GREEN tool its envelope allows")
    return calls


def prepare(state: Path, mix: str) -> tuple[list[tuple[str, str]], str]:
    """Apply the scaled fleet (with the sample fleet's Rego) to a fresh SQLite store in ``state``;
    the (instance, tool) calls of ``mix`` and a runtime token for their tenant."""
    armctl(state, "init")
    repo = with_sample_rego(fleetgen.cached(WORK, 334), state)
    armctl(state, "apply", "--repo", str(repo), "--ref", "main")
    engine = sa.create_engine(f"sqlite:///{state / 'arm.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT i.id, v.envelope FROM instances i JOIN agent_versions v"
                " ON v.tenant = i.tenant AND v.name = i.version WHERE i.state != 'RETIRED' ORDER BY i.id"
            )
        ).all()
        tenant = connection.execute(sa.text("SELECT name FROM tenants LIMIT 1")).scalar_one()
        catalog = json.loads(connection.execute(sa.text("SELECT spec FROM tool_catalogs LIMIT 1")).scalar_one())
    engine.dispose()
    calls = _allowed_calls(rows, catalog, mix)
    token = armctl(state, "token", "create", "--name", "bench", "--kind", "runtime", "--tenant", tenant).strip()
    return calls, token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--mix",
        choices=["allow", "catalog"],
        default="allow",
        help="allow: each instance calls a GREEN tool its envelope allows (what runtimes mostly do); "
        "catalog: the first GREEN catalog tools whatever the envelope says (mostly DENY, each writing a change record)",
    )
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="also serve from this source tree (e.g. 'git archive' of the commit before a change), "
        "first, on a copy of the same store: before and after, same machine, same run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    state = Path(tempfile.mkdtemp(prefix="arm-decisions-"))
    try:
        calls, token = prepare(state, args.mix)
        variants = (
            [(f"before ({args.before})", Path(args.before).resolve()), ("after (this tree)", None)]
            if args.before
            else [("", None)]
        )
        for label, tree in variants:
            run = Path(tempfile.mkdtemp(prefix="arm-decisions-run-"))
            try:
                for name in ("arm.db", "arm.db-wal", "arm.db-shm"):
                    if (state / name).exists():
                        shutil.copy(state / name, run / name)
                if label:
                    print(f"== {label}")
                measure(run, calls, token, args, tree)
            finally:
                shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def measure(state: Path, calls: list[tuple[str, str]], token: str, args: argparse.Namespace, tree: Path | None) -> None:
    """Serve the store in ``state`` (from ``tree``'s code when given), drive it with wrk, print the figures."""
    engine = sa.create_engine(f"sqlite:///{state / 'arm.db'}")
    instances, tools = [c[0] for c in calls], [c[1] for c in calls]
    script = state / "decisions.lua"
    script.write_text(LUA % (",".join(f'"{i}"' for i in instances), ",".join(f'"{t}"' for t in tools), token))
    port = free_port()
    env = {**os.environ, "ARM_STATE_DIR": str(state)}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    server = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "reconciler", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(tree) if tree is not None else None,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        one = run_wrk(url, script, 1, args.seconds, server.pid)
        many = run_wrk(url, script, 16, args.seconds, server.pid)
        time.sleep(0.5)  # requests wrk left in flight finish
        by_result = server_answered(url)
        served = sum(by_result.values())
        wal = state / "arm.db-wal"
        wal_bytes = wal.stat().st_size if wal.exists() else 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(*) FROM op_events WHERE type = 'DECISION'")).scalar_one()
    answered = one["requests"] - one["errors"] + many["requests"] - many["errors"]
    floor = engine_floor(state)
    idle_poll = os.environ.get("ARM_IDLE_POLL_MICROSECONDS")
    print(
        f"POST /v1/decisions ({args.mix} mix), {len(instances)} instances, SQLite, server on CPU 1, wrk on CPU 0, {args.seconds} s per run"
    )
    polling = f"{idle_poll} µs (ARM_IDLE_POLL_MICROSECONDS)" if idle_poll else "200 µs (the default; ARM_IDLE_POLL_MICROSECONDS)"
    print(f"  the server's idle polling after a decision: {polling}")

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f} ms"

    print(f"  c=1   {one['rps']:8.0f} decisions/s  p50 {ms(one.get('p50'))}  (target <= 0.3 ms)  errors {one['errors']:.0f}")
    print(
        f"  c=16  {many['rps']:8.0f} decisions/s  p99 {ms(many.get('p99'))}  (targets >= 6000/s, <= 7 ms)  errors {many['errors']:.0f}"
    )
    print(
        "  server CPU per request (user + system): "
        + ", ".join(f"c={c} {f.get('user_us', 0):.0f} + {f.get('sys_us', 0):.0f} µs" for c, f in ((1, one), (16, many)))
        + " (at c=1 it includes the idle polling)"
    )
    # wrk stops with requests in flight: the server answers (and stores) those too, after wrk
    # stopped counting. The server's own count of answered decisions is the one to compare.
    verdict = "equal" if stored == served else f"{stored - served:+d} MISMATCH"
    print(f"  stored decision events {stored} vs decisions the server answered {served}: {verdict}")
    print(f"  (wrk counted {answered:.0f} responses; the rest were in flight when it stopped)")
    print("  answers: " + ", ".join(f"{n} {result}" for result, n in sorted(by_result.items())))
    print(f"  embedded engine in process: {floor:,.0f} decisions/s (the floor)")
    print(f"  SQLite WAL after the runs: {wal_bytes / 2**20:.1f} MiB (kept bounded by the decision writer's checkpoints)")


if __name__ == "__main__":
    main()
