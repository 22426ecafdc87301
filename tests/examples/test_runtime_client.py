"""``examples/runtime-client/client.py`` against a real ``armctl serve`` over the sample fleet."""

from __future__ import annotations

import importlib.util
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa

from reconciler.state import tables
from tests.examples.conftest import EXAMPLES, Served, example_env, free_port

CLIENT = EXAMPLES / "runtime-client" / "client.py"


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arm_example_client", CLIENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Running:
    """The client as a subprocess whose output lines can be waited for."""

    def __init__(self, served: Served, *args: str) -> None:
        env = example_env(served.fleet.state, ARM_URL=served.url, ARM_TOKEN=served.token)
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code, "\n".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def test_the_runtime_asks_before_every_call_waits_for_an_approval_and_reports_what_it_did(served: Served) -> None:
    client = Running(
        served, "--environment", "dev", "--deployment", "billing-agent-dev", "--run-id", "run-42", "--poll-interval", "0.2"
    )
    try:
        approval_id = client.wait_for(r"waiting up to 30 s for approval (\d+)").group(1)
        pending = served.fleet.armctl("approvals", "list", "--format", "json").stdout
        assert any(a["id"] == int(approval_id) and a["subject_kind"] == "ToolCall" for a in json.loads(pending))
        approved = served.fleet.armctl("approvals", "approve", approval_id, "--as", "lena-fischer", "-m", "refund INV-1042 ok")
        assert "The runtime's next ask for that call is allowed, once." in approved.stdout
        code, output = client.finish()
    finally:
        client.stop()

    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "instances in dev: acme:billing-agent-dev-g1-0 (ACTIVE)"
    assert lines[1] == "heartbeat acme:billing-agent-dev-g1-0: ACTIVE"
    assert lines[2] == "run run-42 as acme:billing-agent-dev-g1-0"
    assert lines[3].startswith("billing.get-invoice: ALLOW (within the envelope) [decision ")
    assert f", policy {served.fleet.sha[:12]}]" in lines[3]
    assert lines[4].startswith("  ran billing.get-invoice; reported COST 0.02 (HTTP 200) and TOOL_RESULT (HTTP 200)")
    assert lines[5].startswith("payments.refund: NEEDS_APPROVAL (risk RED is above the envelope's approvalAbove YELLOW; ")
    assert "tool payments.refund requires approval" in lines[5]
    assert lines[7] == f"  approval {approval_id}: APPROVED"
    assert lines[8].startswith("payments.refund: ALLOW (approved request)")
    assert lines[9].startswith("  ran payments.refund; reported COST 0.05 (HTTP 200)")
    assert lines[10].startswith("payments.charge: DENY (tool payments.charge is denied by the envelope)")
    assert lines[11:] == ["  skipped payments.charge", "done: 2 ran, 1 not allowed"]

    e = tables.op_events.c
    stored = served.fleet.query(
        sa.select(e.type, e.instance, e.payload).where(e.instance == "acme:billing-agent-dev-g1-0").order_by(e.id)
    )
    decisions = [(r.payload["tool"], r.payload["decision"], r.payload["runId"]) for r in stored if r.type == "DECISION"]
    assert decisions == [
        ("billing.get-invoice", "ALLOW", "run-42"),
        ("payments.refund", "NEEDS_APPROVAL", "run-42"),
        ("payments.refund", "ALLOW", "run-42"),
        ("payments.charge", "DENY", "run-42"),
    ]
    costs = [(r.payload["tool"], r.payload["amount"], r.payload["runId"]) for r in stored if r.type == "COST"]
    assert costs == [("billing.get-invoice", 0.02, "run-42"), ("payments.refund", 0.05, "run-42")]
    results = [(r.payload["tool"], r.payload["ok"]) for r in stored if r.type == "TOOL_RESULT"]
    assert results == [("billing.get-invoice", True), ("payments.refund", True)]
    assert [r.type for r in stored].count("HEARTBEAT") == 1

    a = tables.approvals.c
    (approval,) = served.fleet.query(sa.select(a.status, a.subject_name).where(a.id == int(approval_id)))
    assert (approval.status, approval.subject_name) == ("USED", "acme:billing-agent-dev-g1-0")  # allowed exactly once
    decided = served.fleet.history("--type", "APPROVAL_DECIDED")
    assert [(r["object_name"], r["operator"]) for r in decided] == [(approval_id, "lena-fischer")]


def test_the_first_heartbeat_activates_a_provisioning_instance(served: Served, tmp_path: Path) -> None:
    calls = tmp_path / "calls.json"
    calls.write_text(json.dumps([{"tool": "kb.search-articles", "args": {"q": "reset password"}, "cost": 0.01}]))
    client = Running(served, "--environment", "staging", "--deployment", "support-agent-staging", "--calls", str(calls))
    try:
        code, output = client.finish()
    finally:
        client.stop()

    assert code == 0, output
    assert output.splitlines()[:3] == [
        "instances in staging: acme:support-agent-staging-g1-0 (PROVISIONING), acme:support-agent-staging-g1-1 (PROVISIONING)",
        "heartbeat acme:support-agent-staging-g1-0: ACTIVE",
        "heartbeat acme:support-agent-staging-g1-1: ACTIVE",
    ]
    assert "kb.search-articles: ALLOW (within the envelope)" in output and output.endswith("done: 1 ran, 0 not allowed")
    activated = served.fleet.history("--type", "INSTANCE_TRANSITIONED", "--name", "acme:support-agent-staging-g1-0")
    assert [(r["before"], r["after"]) for r in activated] == [
        ({"state": "PROVISIONING"}, {"state": "ACTIVE", "cause": "first heartbeat"})
    ]


def test_an_approval_nobody_decides_in_time_is_a_deny(served: Served) -> None:
    client = Running(
        served, "--deployment", "billing-agent-dev", "--approval-timeout", "1", "--poll-interval", "0.2", "--run-id", "r-late"
    )
    try:
        code, output = client.finish()
    finally:
        client.stop()

    assert code == 0, output
    assert re.search(r"^  approval \d+: PENDING\n  skipped payments.refund$", output, re.MULTILINE), output
    assert output.endswith("done: 1 ran, 2 not allowed")
    e = tables.op_events.c
    ran = served.fleet.query(sa.select(e.payload).where(e.type == "TOOL_RESULT"))
    assert [r.payload["tool"] for r in ran] == ["billing.get-invoice"]


def test_any_answer_that_is_not_a_decision_is_a_deny(served: Served) -> None:
    client = load_client()
    ask = ("acme:billing-agent-dev-g1-0", "billing.get-invoice", {"invoice": "INV-1"}, 0.0, "r")

    assert client.Arm(served.url, served.token).decide(*ask)["decision"] == "ALLOW"
    unknown_token = client.Arm(served.url, "arm_not-a-token").decide(*ask)
    assert unknown_token["decision"] == "DENY" and unknown_token["reasons"][0].startswith("no decision (HTTP 401): unknown token")
    wrong_route = client.Arm(served.url + "/nowhere", served.token).decide(*ask)
    assert wrong_route["decision"] == "DENY" and wrong_route["reasons"][0].startswith("no decision (HTTP 404)")
    refused = client.Arm(f"http://127.0.0.1:{free_port()}", served.token).decide(*ask)
    assert refused["decision"] == "DENY" and refused["reasons"][0].startswith("no decision (HTTP error): no answer from")

    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        timed_out = client.Arm(f"http://127.0.0.1:{silent.getsockname()[1]}", served.token, timeout=0.5).decide(*ask)
    assert timed_out["decision"] == "DENY" and "timed out" in timed_out["reasons"][0]
    assert time.monotonic() - started < 5

    listing = subprocess.run(
        [sys.executable, str(CLIENT), "--url", served.url, "--token", "arm_not-a-token"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 1 and listing.stderr.startswith("cannot list instances (HTTP 401): unknown token")
