"""The console as ``armctl serve`` serves it (a real process) over the applied sample fleet: an
operator signs in, reads the overview and asks the simulator under a ref of the repository the
server was started in."""

from __future__ import annotations

import re

import httpx

from tests.examples.conftest import Served


def test_armctl_serve_serves_the_console_and_its_simulator_reads_refs_of_its_repository(served: Served) -> None:
    made = served.fleet.armctl(
        "token", "create", "--name", "sam-console", "--kind", "operator", "--tenant", "acme", "--operator", "sam-okafor"
    )
    token = made.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=served.url, timeout=30) as client:
        assert client.post("/ui/login", data={"token": token}).status_code == 303
        overview = client.get("/ui/")
        assert overview.status_code == 200 and "sam-okafor · tenant acme" in overview.text and "Waiting gates" in overview.text
        page = client.get("/ui/simulate")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        ask = {"csrf": csrf.group(1), "target": "version", "name": "billing-agent@1.0.0", "environment": "prod",
               "tool": "payments.refund", "args": '{"invoice": "INV-1", "amount": 150}', "ref": "main"}  # fmt: skip
        answer = client.post("/ui/simulate", data=ask)
        assert answer.status_code == 200, answer.text
        assert f"main@sha1:{served.fleet.sha}" in answer.text and "NEEDS_APPROVAL" in answer.text
