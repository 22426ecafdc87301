"""What the routers share: the store, the clock, the decider, the token cache, the counters, the
signing key.

``app.create_app`` builds one :class:`Services` and keeps it on the application
(``app.state.services``); every router reads it from the request with :func:`of`, so routers hold
no state of their own and need no closure over ``create_app``'s locals.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from starlette import requests

from reconciler import clock as clock_
from reconciler import metrics
from reconciler.decisions import bundling, deciding
from reconciler.evidence import keys
from reconciler.reconcile import simulating
from reconciler.server import auth, guarding
from reconciler.state import database

__all__ = ["Runner", "Services", "of"]


class Runner(Protocol):
    """What the daemon (``armctl run``) adds to the API; ``armctl serve`` runs without one."""

    def readiness(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> list[str]: ...

    def webhook(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]: ...


@dataclasses.dataclass
class Services:
    db: database.Engine
    clock: clock_.Clock
    decider: deciding.Decider
    tokens: auth.Tokens
    runner: Runner | None = None
    #: signs the OPA bundles served (None: unsigned); its public key is published at /v1/keys
    signer: keys.Signer | None = None
    #: decisions answered, by result
    decisions: metrics.Counter = dataclasses.field(
        default_factory=lambda: metrics.Counter(
            "arm_decisions_total", "Decisions answered, by result.", "decision", preset=("ALLOW", "NEEDS_APPROVAL", "DENY")
        )
    )
    #: HTTP responses, by route group and status
    requests: metrics.Counter = dataclasses.field(
        default_factory=lambda: metrics.Counter(
            "arm_http_requests_total", "HTTP requests, by route group and status.", "route", "status"
        )
    )
    #: the fleet repository, for the console's simulator to read other refs (None: the applied commit only)
    source: simulating.Source | None = None
    #: each tenant's bundle as an engine, for OPA's Data API
    tenant_engines: bundling.TenantEngines = dataclasses.field(default_factory=bundling.TenantEngines)
    #: requests in flight per token (``guarding``; the decision route counts its own there too)
    caps: guarding.Caps = dataclasses.field(default_factory=guarding.Caps)
    #: one decision-log upload is ingested at a time (``opa``): the rest wait their turn, decisions do not
    ingesting: asyncio.Semaphore = dataclasses.field(default_factory=lambda: asyncio.Semaphore(1))


def of(request: requests.Request) -> Services:
    services: Services = request.app.state.services
    return services
