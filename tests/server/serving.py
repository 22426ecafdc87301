"""Serving the API for tests: a fleet, uvicorn on loopback configured as ``armctl serve`` does it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import httpx
import uvicorn

from reconciler.server import protocol

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

#: Both ways the decision route is served: by uvicorn's protocol and as ASGI.
TRANSPORTS = ["protocol", "asgi"]


def tenant_fleet(tenant: str) -> str:
    return f"""\
apiVersion: arm/v1
kind: Tenant
metadata: {{name: {tenant}}}
---
apiVersion: arm/v1
kind: Project
metadata: {{name: apps, tenant: {tenant}}}
---
apiVersion: arm/v1
kind: Role
metadata: {{name: oncall, tenant: {tenant}}}
spec: {{permissions: ["approvals:decide", "instances:*", "tenants:*"]}}
---
apiVersion: arm/v1
kind: Operator
metadata: {{name: olga, tenant: {tenant}}}
spec: {{email: olga@{tenant}.example, roles: [oncall]}}
---
apiVersion: arm/v1
kind: Operator
metadata: {{name: vic, tenant: {tenant}}}
spec: {{email: vic@{tenant}.example}}
---
apiVersion: arm/v1
kind: Environment
metadata: {{name: dev, tenant: {tenant}}}
---
apiVersion: arm/v1
kind: ToolCatalog
metadata: {{name: tools, tenant: {tenant}}}
spec:
  tools: [{{name: crm.lookup, risk: GREEN}}, {{name: payments.refund, risk: RED, writes: true}}]
---
apiVersion: arm/v1
kind: PolicyEnvelope
metadata: {{name: rules, tenant: {tenant}}}
spec:
  scope: {{kind: Tenant, name: {tenant}}}
  approvalAbove: YELLOW
  budgets: {{daily: 1.0}}
---
apiVersion: arm/v1
kind: AgentTemplate
metadata: {{name: app, tenant: {tenant}}}
spec: {{project: apps, role: helps, owner: team@{tenant}.example}}
---
apiVersion: arm/v1
kind: AgentVersion
metadata: {{name: app@1.0.0, tenant: {tenant}}}
spec:
  template: app
  genome: {{model: {{provider: p, name: m}}}}
---
apiVersion: arm/v1
kind: Deployment
metadata: {{name: app-dev, tenant: {tenant}}}
spec: {{template: app, environment: dev, version: app@1.0.0, replicas: 2}}
"""


class Server:
    """uvicorn serving the app on an ephemeral loopback port, in a thread; stopped by the fixture."""

    def __init__(
        self, app: Any, transport: str = "protocol", asgi: Any = None, idle_poll_seconds: float = 0.0, **config: Any
    ) -> None:
        """``transport``: "protocol" serves as ``armctl serve`` does (``server.protocol``: the
        decision route answered by uvicorn's protocol); "asgi" through uvicorn's plain ASGI path.
        ``asgi``: what uvicorn hands the requests the protocol does not answer (default ``app``);
        ``idle_poll_seconds``: the protocol's idle polling (off: it only costs the tests CPU);
        ``config``: more of uvicorn's options."""
        if transport == "protocol":
            self.options = protocol.options(app, idle_poll_seconds=idle_poll_seconds)
        else:
            self.options = {"log_level": "warning", "access_log": False}
        self.server = uvicorn.Server(uvicorn.Config(asgi or app, host="127.0.0.1", port=0, **self.options, **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SECRET = "sk-live0123456789abcdefXYZ"


REFUND = {
    "instance": "acme:app-dev-g1-0",
    "tool": "payments.refund",
    "args": {"invoice": "INV-1042", "amount": 5, "api_key": SECRET},
    "costEstimate": 0.25,
    "runId": "run-7",
}


def request_approval(client: httpx.Client, token: str, ask: dict[str, Any] = REFUND) -> int:
    answer = client.post("/v1/decisions", json=ask, headers=auth(token)).json()
    assert answer["decision"] == "NEEDS_APPROVAL", answer
    return int(answer["approvalId"])
