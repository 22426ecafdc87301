#!/usr/bin/env python3
"""A small agent runtime that asks the ARM reconciler before every tool call.

Standard library only (``urllib.request`` + ``json``), so it can be copied into any runtime.
It does what every runtime governed by ARM does:

1. ``GET /v1/instances?environment=...`` — which instances it should run;
2. ``POST /v1/events`` ``HEARTBEAT`` for each (the first heartbeat activates a PROVISIONING one);
3. before each tool call, ``POST /v1/decisions`` ``{instance, tool, args, costEstimate, runId}``:
   ALLOW runs the tool, DENY skips it, NEEDS_APPROVAL polls ``GET /v1/approvals/{id}`` for a
   bounded time and asks again once approved. **Any answer that is not a 200 with a decision
   — an error status, a timeout, a refused connection, a body that is not JSON — is a DENY**;
4. after a tool ran, ``POST /v1/events`` ``COST`` and ``TOOL_RESULT``.

The tools themselves are simulated: this example is about the conversation with ARM.

Usage: ARM_URL=http://127.0.0.1:8080 ARM_TOKEN=arm_... python3 client.py --environment dev
       [--deployment NAME | --instance ID] [--calls calls.json] [--approval-timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

#: The calls made when no --calls file is given: they fit the sample fleet's billing agent in dev
#: (billing-agent@1.2.0): an invoice lookup is allowed, a refund of 12.50 needs the billing desk,
#: charging a card is denied by the envelope.
DEFAULT_CALLS: list[dict[str, Any]] = [
    {"tool": "billing.get-invoice", "args": {"invoice": "INV-1042"}, "cost": 0.02},
    {"tool": "payments.refund", "args": {"invoice": "INV-1042", "amount": 12.5, "currency": "EUR"}, "cost": 0.05},
    {"tool": "payments.charge", "args": {"customer": "C-77", "amount": 99, "currency": "EUR"}, "cost": 0.05},
]


class Arm:
    """The reconciler's HTTP API, with a bearer token. Every call returns ``(status, body)``;
    status 0 means no HTTP answer at all (refused, timed out, unreadable)."""

    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return 0, {"message": f"no answer from {self.url}: {reason}"}

    def decide(self, instance: str, tool: str, args: dict[str, Any], cost: float, run_id: str) -> dict[str, Any]:
        """The decision for one tool call; anything but a 200 carrying a decision is a DENY."""
        body = {"instance": instance, "tool": tool, "args": args, "costEstimate": cost, "runId": run_id}
        status, answer = self.call("POST", "/v1/decisions", body)
        if status == 200 and isinstance(answer, dict) and answer.get("decision") in ("ALLOW", "NEEDS_APPROVAL", "DENY"):
            return answer
        return {"decision": "DENY", "reasons": [f"no decision (HTTP {status or 'error'}): {_message(answer)}"]}

    def wait_for_approval(self, approval_id: int, timeout: float, interval: float) -> str:
        """Poll the approval until it is decided or ``timeout`` seconds pass; its last status."""
        deadline = time.monotonic() + timeout
        status_text = "PENDING"
        while True:
            status, answer = self.call("GET", f"/v1/approvals/{approval_id}")
            if status == 200 and isinstance(answer, dict):
                status_text = str(answer.get("status"))
                if status_text != "PENDING":
                    return status_text
            if time.monotonic() + interval > deadline:
                return status_text
            time.sleep(interval)

    def event(self, body: dict[str, Any]) -> tuple[int, Any]:
        return self.call("POST", "/v1/events", body)


def run_tool(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Stands in for the real tool: here it only echoes what it was asked."""
    return {"ok": True, "tool": tool, "echo": args}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A runtime that asks ARM before every tool call.")
    parser.add_argument("--url", default=os.environ.get("ARM_URL", "http://127.0.0.1:8080"), help="env ARM_URL")
    parser.add_argument("--token", default=os.environ.get("ARM_TOKEN"), help="a runtime token (env ARM_TOKEN)")
    parser.add_argument("--environment", default=os.environ.get("ARM_ENVIRONMENT", "dev"), help="env ARM_ENVIRONMENT")
    parser.add_argument("--deployment", help="only this deployment's instances")
    parser.add_argument("--instance", help="act as this instance (default: the first one listed)")
    parser.add_argument("--calls", help="a JSON file: [{tool, args, cost}, ...] (default: a billing-agent task)")
    parser.add_argument("--run-id", default=f"run-{uuid.uuid4().hex[:12]}")
    parser.add_argument("--approval-timeout", type=float, default=30.0, help="seconds to wait for a human")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between approval polls")
    options = parser.parse_args(argv)
    if not options.token:
        parser.error("a runtime token is needed: --token or ARM_TOKEN (armctl token create --kind runtime ...)")
    calls = DEFAULT_CALLS
    if options.calls:
        with open(options.calls, encoding="utf-8") as handle:
            calls = json.load(handle)
    arm = Arm(options.url, options.token)

    query = {"environment": options.environment} | ({"deployment": options.deployment} if options.deployment else {})
    status, instances = arm.call("GET", "/v1/instances?" + urllib.parse.urlencode(query))
    if status != 200 or not isinstance(instances, list):
        print(f"cannot list instances (HTTP {status or 'error'}): {_message(instances)}", file=sys.stderr)
        return 1
    if not instances:
        print(f"no instances to run in environment {options.environment!r}", file=sys.stderr)
        return 1
    print(f"instances in {options.environment}: " + ", ".join(f"{i['id']} ({i['state']})" for i in instances))
    for item in instances:
        status, answer = arm.event({"type": "HEARTBEAT", "instance": item["id"]})
        state = answer.get("state", item["state"]) if status == 200 and isinstance(answer, dict) else "?"
        print(f"heartbeat {item['id']}: " + (f"{state}" if status == 200 else f"failed (HTTP {status}): {_message(answer)}"))

    instance = options.instance or instances[0]["id"]
    print(f"run {options.run_id} as {instance}")
    ran = denied = 0
    for call in calls:
        tool, args, cost = call["tool"], call.get("args", {}), float(call.get("cost", 0.0))
        answer = arm.decide(instance, tool, args, cost, options.run_id)
        print(f"{tool}: {_describe(answer)}")
        if answer["decision"] == "NEEDS_APPROVAL":
            approval = answer.get("approvalId")
            print(f"  waiting up to {options.approval_timeout:g} s for approval {approval}")
            outcome = arm.wait_for_approval(approval, options.approval_timeout, options.poll_interval) if approval else "NONE"
            print(f"  approval {approval}: {outcome}")
            if outcome == "APPROVED":
                answer = arm.decide(instance, tool, args, cost, options.run_id)
                print(f"{tool}: {_describe(answer)}")
        if answer["decision"] != "ALLOW":
            denied += 1
            print(f"  skipped {tool}")
            continue
        result = run_tool(tool, args)
        ran += 1
        cost_status, _ = arm.event({"type": "COST", "instance": instance, "amount": cost, "runId": options.run_id, "tool": tool})
        result_status, _ = arm.event(
            {
                "type": "TOOL_RESULT",
                "instance": instance,
                "tool": tool,
                "runId": options.run_id,
                "decisionId": answer.get("decisionId"),
                "ok": result["ok"],
            }
        )
        print(f"  ran {tool}; reported COST {cost:g} (HTTP {cost_status}) and TOOL_RESULT (HTTP {result_status})")
    print(f"done: {ran} ran, {denied} not allowed")
    return 0


def _describe(answer: dict[str, Any]) -> str:
    text = f"{answer['decision']} ({'; '.join(answer.get('reasons') or [])})"
    if "decisionId" in answer:
        text += f" [decision {answer['decisionId']}, policy {str(answer.get('policyRevision'))[:12]}]"
    return text


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        return str(answer.get("message") or answer.get("detail") or answer)
    return str(answer)


if __name__ == "__main__":
    sys.exit(main())
