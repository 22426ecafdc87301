"""Benchmark: the abuse cases of issue 15 replayed against a running server, with a bystander.

Applies a two-tenant fleet (acme, globex) to a fresh SQLite store, creates tokens, starts
``armctl serve`` on loopback, then for each case sends the abusive request(s) as acme (or with
no token) while a bystander — globex's runtime — asks decisions back to back on its own
connection. Per case it prints the answer, how long the abusive request took, and how much
longer the bystander's slowest decision took during the case than its median when the server
is quiet (target: ≤ 50 ms added for every case). A figure printer, not a test; every loop is
bounded in count and time and only loopback is contacted.

    python bench/bench_abuse.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server.serving import tenant_fleet

MIB = 2**20


def armctl(state: Path, *args: str) -> str:
    env = {**os.environ, "ARM_STATE_DIR": str(state)}
    out = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"armctl {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


def prepare(state: Path) -> dict[str, str]:
    repo = state / "fleet-repo"
    (repo / "fleet").mkdir(parents=True)
    (repo / "fleet" / "acme.yaml").write_text(tenant_fleet("acme"))
    (repo / "fleet" / "globex.yaml").write_text(tenant_fleet("globex"))
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "two tenants"], check=True)
    armctl(state, "init")
    armctl(state, "apply", "--repo", str(repo), "--ref", "main")
    made = {}
    for name, kind, tenant, extra in (
        ("acme-rt", "runtime", "acme", ()),
        ("acme-ops", "operator", "acme", ("--operator", "olga")),
        ("globex-rt", "runtime", "globex", ()),
    ):
        made[name] = armctl(state, "token", "create", "--name", name, "--kind", kind, "--tenant", tenant, *extra).strip()
    return made


def _bystand(port: int, token: str, stop: Any, out: Any) -> None:
    """globex's runtime asking decisions back to back on one keep-alive connection, in its own
    process (the bench's threads must not slow it through the GIL); sends its samples at the end."""
    samples: list[tuple[float, float]] = []  # (finished at, seconds), on the system's monotonic clock
    failures = 0
    body = json.dumps({"instance": "globex:app-dev-g1-0", "tool": "crm.lookup"}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop.is_set():
        started = time.monotonic()
        try:
            connection.request("POST", "/v1/decisions", body, headers)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        finished = time.monotonic()
        if ok:
            samples.append((finished, finished - started))
        else:
            failures += 1
        time.sleep(0.002)  # a runtime's pace
    out.send((samples, failures))


class Bystander:
    """The bystander process; ``samples`` and ``failures`` once it has stopped."""

    def __init__(self, port: int, token: str) -> None:
        self._stop = multiprocessing.Event()
        self._ours, theirs = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_bystand, args=(port, token, self._stop, theirs), daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.failures = 0

    def __enter__(self) -> Bystander:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ours.poll(60):
            self.samples, self.failures = self._ours.recv()
        self._process.join(timeout=30)

    def worst_between(self, start: float, end: float) -> float:
        """The slowest decision that overlapped [start, end] (one that began before ``end``)."""
        overlapping = [s for at, s in self.samples if at >= start and at - s <= end]
        return max(overlapping, default=0.0)

    def quiet(self, start: float, end: float) -> float:
        """The median decision between ``start`` and ``end``."""
        return statistics.median(s for at, s in self.samples if start <= at <= end)


def raw_request(port: int, head: str, body: bytes | Iterator[bytes] = b"", timeout: float = 120) -> tuple[int, bytes]:
    """Send one request on a new connection (``body`` may be a stream) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        chunks = [body] if isinstance(body, bytes) else body
        with contextlib.suppress(OSError):  # the server may answer (and close) before it is all sent
            for chunk in chunks:
                sock.sendall(chunk)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        return status, data.split(b"\r\n\r\n", 1)[1][:160] if b"\r\n\r\n" in data else data[:160]


def post(port: int, path: str, body: bytes, token: str | None, extra: str = "", length: int | None = None) -> tuple[int, bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    size = len(body) if length is None else length
    head = f"POST {path} HTTP/1.1\r\nHost: arm\r\n{auth}{extra}Content-Length: {size}\r\nConnection: close\r\n\r\n"
    return raw_request(port, head, body)


def streamed(total: int) -> Iterator[bytes]:
    block = b"x" * MIB
    for _ in range(total // MIB):
        yield block


def cases(port: int, tokens: dict[str, str], quick: bool) -> list[tuple[str, Callable[[], tuple[int, bytes]]]]:
    acme, ops = tokens["acme-rt"], tokens["acme-ops"]
    million = gzip.compress(b"[" + b"{}," * 999_999 + b"{}]")
    full = gzip.compress(b"[" + b'{"decision_id":"d","result":true},' * 999 + b"{}]")
    gz = "Content-Encoding: gzip\r\n"
    json_ = "Content-Type: application/json\r\n"
    ask = '{"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": %s}'
    huge = 20 * MIB if quick else 200 * MIB
    twenty = b"{" + b" " * (20 * MIB) + b"}"
    brackets = (ask % ("[" + "[]," * 349_000 + "[]]")).encode()
    blob = (ask % json.dumps({"blob": "y" * 900_000})).encode()
    # "=" everywhere: every stretch of it may start a secret (password=..., ?token=...), so each
    # secret pattern is tried at every character
    equals = (ask % json.dumps({"blob": "y=" * 450_000})).encode()
    # a secret at the end of 900 KiB: RED, so the call needs approval, which commits on its own
    secret = (ask % json.dumps({"blob": "y" * 900_000 + " sk-" + "a" * 30})).encode()
    # 50,000 card numbers: a match every 17 characters, each to be redacted
    cards = (ask % json.dumps({"blob": "4111111111111111 " * 50_000})).encode()

    def unauthenticated_stream() -> tuple[int, bytes]:
        return post(port, "/v1/events", streamed(huge), None, json_, length=huge)  # type: ignore[arg-type]

    def four_in_a_row() -> tuple[int, bytes]:
        for _ in range(3):
            unauthenticated_stream()
        return unauthenticated_stream()

    def slow_headers() -> tuple[int, bytes]:
        socks = []
        for _ in range(500 if quick else 2000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: arm\r\nX-Slow: ")
            socks.append(sock)
        status = post(port, "/v1/decisions", (ask % "{}").encode(), acme, json_)
        for sock in socks:
            sock.close()
        return status

    def one_token_floods() -> tuple[int, bytes]:
        results: list[tuple[int, bytes]] = []
        beat = json.dumps({"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}).encode()
        threads = [
            threading.Thread(target=lambda: results.append(post(port, "/v1/events", beat, acme, json_))) for _ in range(64)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counts: dict[int, int] = {}
        for status, _ in results:
            counts[status] = counts.get(status, 0) + 1
        return max(counts, key=lambda s: counts[s]), json.dumps(counts).encode()

    return [
        ("/logs 1M empty entries (3 KB gzipped)", lambda: post(port, "/logs", million, acme, gz)),
        ("/logs 1,000 entries (the most allowed)", lambda: post(port, "/logs", full, acme, gz)),
        (f"/v1/events {huge // MIB} MiB, no token", unauthenticated_stream),
        (f"/v1/events {huge // MIB} MiB, no token, 4 in a row", four_in_a_row),
        ("/v1/events 20 MiB, with a token", lambda: post(port, "/v1/events", twenty, acme, json_)),
        ("/v1/decisions 1 MiB of [] in args", lambda: post(port, "/v1/decisions", brackets, acme, json_)),
        ("/v1/decisions 900 KiB string in args", lambda: post(port, "/v1/decisions", blob, acme, json_)),
        ('/v1/decisions 900 KiB of "y=" in args', lambda: post(port, "/v1/decisions", equals, acme, json_)),
        ("/v1/decisions 50,000 card numbers in args", lambda: post(port, "/v1/decisions", cards, acme, json_)),
        ("/v1/decisions 900 KiB and a secret: needs approval", lambda: post(port, "/v1/decisions", secret, acme, json_)),
        ("/v1/decisions nested 1,000 deep", lambda: post(port, "/v1/decisions", ("[" * 1000 + "]" * 1000).encode(), acme, json_)),
        ("/v1/decisions args nested 60 deep", lambda: post(port, "/v1/decisions", (ask % ('{"a": ' + "[" * 58 + "]" * 58 + "}")).encode(), acme, json_)),
        ("/v1/data nested 1,000 deep", lambda: post(port, "/v1/data/arm", ('{"input": ' + "[" * 1000 + "]" * 1000 + "}").encode(), acme, json_)),
        ("/v1/events lone surrogate", lambda: post(port, "/v1/events", b'{"type": "TOOL_RESULT", "instance": "acme:app-dev-g1-0", "x": "\\ud800"}', acme, json_)),
        ("/v1/events integer past 2^64", lambda: post(port, "/v1/events", b'{"type": "TOOL_RESULT", "instance": "acme:app-dev-g1-0", "x": 18446744073709551616}', acme, json_)),
        ("/v1/approvals/2^64/decision", lambda: post(port, f"/v1/approvals/{2**64}/decision", b'{"decision": "APPROVE", "justification": "x"}', ops, json_)),
        ('approval {"decision": NaN}', lambda: post(port, "/v1/approvals/1/decision", b'{"decision": NaN, "justification": "x"}', ops, json_)),
        (f"{500 if quick else 2000} slow-header connections, then a decision", slow_headers),
        ("one token, 64 concurrent events", one_token_floods),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller bodies and fewer connections")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="arm-abuse-"))
    try:
        tokens = prepare(state)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "ARM_STATE_DIR": str(state)}
        server = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )  # fmt: skip
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            planned = cases(port, tokens, args.quick)  # every body built before the clock runs
            timings: list[tuple[str, int, bytes, float, float]] = []
            with Bystander(port, tokens["globex-rt"]) as bystander:
                time.sleep(2.0)
                quiet_window = (time.monotonic() - 1.5, time.monotonic())
                for name, run in planned:
                    time.sleep(0.3)
                    started = time.monotonic()
                    status, body = run()
                    ended = time.monotonic()
                    timings.append((name, status, body, started, ended))
                time.sleep(0.2)  # the bystander's decision in flight at the end finishes
            quiet = bystander.quiet(*quiet_window)
            print(
                f"abuse cases against armctl serve (SQLite); bystander: globex decisions back to back, quiet median {quiet * 1000:.2f} ms"
            )
            print(f"  {'case':48} {'answer':>6} {'took':>9} {'bystander +':>12}  body")
            worst = 0.0
            for name, status, body, started, ended in timings:
                added = max(0.0, bystander.worst_between(started, ended) - quiet)
                worst = max(worst, added)
                text = body.decode("utf-8", "replace").replace("\n", " ")[:70]
                print(f"  {name:48} {status:>6} {(ended - started) * 1000:7.0f} ms {added * 1000:9.1f} ms  {text}")
            print(
                f"  worst added wait of the bystander: {worst * 1000:.1f} ms (target <= 50 ms); its failed decisions: {bystander.failures}"
            )
            peak = next(
                (
                    line.split()[1]
                    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM")
                ),
                "0",
            )
            print(f"  the server's peak memory (VmHWM): {int(peak) / 1024:.0f} MiB")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
