"""One token cannot take every worker: requests in flight are capped per token (429 past it).

The cap is counted from the moment a request is authenticated, before its body is read, so a
caller holding many slow requests open is stopped at the cap while every other token is served.
"""

from __future__ import annotations

import time

import httpx
import sqlalchemy as sa

from reconciler.desired import repository
from reconciler.oversight import access
from reconciler.reconcile import running
from reconciler.server import app as server_app
from reconciler.server import decisions, guarding
from reconciler.state import database
from tests.conftest import GitRepo
from tests.reconcile import scenario
from tests.server.serving import NOW, Server, auth, tenant_fleet
from tests.server.wire import Wire

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


def _held(base: str, token: str) -> Wire:
    """A request of ``token`` whose headers promise a body that never comes: it stays in flight."""
    wire = Wire(base)
    wire.send(f"POST /v1/events HTTP/1.1\r\nHost: arm\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode())
    return wire


def _answered(wire: Wire) -> bool:
    wire.sock.settimeout(0.01)
    try:
        wire._fill()
    except (TimeoutError, OSError):
        pass
    finally:
        wire.sock.settimeout(10)
    return b"\r\n\r\n" in wire.buffer


def test_a_token_past_its_cap_gets_429_and_the_others_are_served(api: Api) -> None:
    client, _, made = api
    base = str(client.base_url)
    heartbeat = {"type": "HEARTBEAT", "instance": "acme:app-dev-g1-0"}
    extra = 3
    held = [_held(base, made["runtime"]) for _ in range(guarding.PER_TOKEN + extra)]
    try:
        # Each held request is counted once authenticated; the ones past the cap are answered 429
        # at once, the others stay in flight, waiting for their bodies.
        refused_held = []
        deadline = time.monotonic() + 10
        while len(refused_held) < extra and time.monotonic() < deadline:
            for wire in held:
                if wire not in refused_held and _answered(wire):
                    refused_held.append(wire)
        assert len(refused_held) == extra
        assert all(wire.response()[0] == 429 for wire in refused_held)
        refused = client.post("/v1/events", json=heartbeat, headers=auth(made["runtime"]))
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1" and refused.json()["error"] == "TooManyRequests"
        # Another token of the same tenant, and decisions of the capped one, are served meanwhile.
        assert client.post("/v1/events", json=heartbeat, headers=auth(made["scoped"])).status_code == 200
        ask = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}
        assert client.post("/v1/decisions", json=ask, headers=auth(made["runtime"])).status_code == 200
    finally:
        for wire in held:
            wire.__exit__()
    for _ in range(200):  # the held requests ended when their connections closed: the token is served again
        if client.post("/v1/events", json=heartbeat, headers=auth(made["runtime"])).status_code == 200:
            break
    else:
        raise AssertionError("the cap was not released")


def test_the_cap_counts_per_token_and_kind() -> None:
    caps = guarding.Caps()
    assert all(caps.enter("a", "requests", 2) for _ in range(2))
    assert not caps.enter("a", "requests", 2)
    assert caps.enter("b", "requests", 2) and caps.enter("a", "decisions", 2)
    caps.leave("a", "requests")
    assert caps.enter("a", "requests", 2)


def test_a_token_has_at_most_two_large_decisions_in_flight(git_repo: GitRepo, db_url: str) -> None:
    # Large bodies are scanned, stored and synced at length: a token's flood of them held every
    # other decision's commit. Past two in flight the next is refused before it is parsed;
    # small decisions of the same token, and large ones of another, are decided meanwhile.
    git_repo.commit(
        {"fleet/acme.yaml": tenant_fleet("acme"), "fleet/globex.yaml": tenant_fleet("globex")}, author=scenario.AUTHOR
    )
    engine = database.connect(db_url)
    try:
        database.migrate(engine)
        application = server_app.create_app(engine)
        caps = application.state.services.caps
        with Server(application, "protocol") as base, httpx.Client(base_url=base, timeout=10) as client:
            running.Reconciler(engine, repository.Repository(git_repo.path), "fleet").apply("main")
            with engine.begin() as connection:
                rt = access.create(connection, "rt", "runtime", "acme", NOW)
                gx = access.create(connection, "gx", "runtime", "globex", NOW)
            small = {"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}
            large = small | {"args": {"note": "x" * (decisions.LARGE_BODY + 1)}}
            assert all(caps.enter("rt", "large decisions", guarding.PER_TOKEN_LARGE_DECISIONS) for _ in range(2))
            refused = client.post("/v1/decisions", json=large, headers=auth(rt))
            assert refused.status_code == 429 and "decisions with bodies over" in refused.json()["message"]
            assert client.post("/v1/decisions", json=small, headers=auth(rt)).json()["decision"] == "ALLOW"
            other = large | {"instance": "globex:app-dev-g1-0"}
            assert client.post("/v1/decisions", json=other, headers=auth(gx)).json()["decision"] == "ALLOW"
            caps.leave("rt", "large decisions")
            assert client.post("/v1/decisions", json=large, headers=auth(rt)).json()["decision"] == "ALLOW"
            # Refused, answered or invalid, each large decision gave its place back.
            assert (
                client.post("/v1/decisions", content=b'{"args": "' + b"x" * 20_000 + b'"}', headers=auth(rt)).status_code == 422
            )
            assert caps.enter("rt", "large decisions", guarding.PER_TOKEN_LARGE_DECISIONS)
            assert not caps.enter("rt", "large decisions", guarding.PER_TOKEN_LARGE_DECISIONS)
    finally:
        engine.dispose()
