"""``server.protocol``: decisions answered by uvicorn's HTTP protocol, checked on the wire.

A raw socket on loopback sends exactly the bytes a test needs (pipelined requests, HTTP/1.0,
``Expect: 100-continue``, chunked bodies, a client that leaves) and reads the answers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reconciler.server import app as server_app
from reconciler.server import decisions, protocol
from reconciler.state import tables
from tests.server.serving import TRANSPORTS, Server
from tests.server.wire import Wire

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


def decision_request(token: str, n: int, *, version: str = "1.1", target: str = "/v1/decisions", headers: str = "") -> bytes:
    body = json.dumps({"instance": "acme:app-dev-g1-0", "tool": "crm.lookup", "args": {"n": n}}).encode()
    return (
        f"POST {target} HTTP/{version}\r\nHost: arm\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def stored_decisions(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).where(tables.op_events.c.type == "DECISION")).scalar_one()


def test_pipelined_requests_are_answered_in_order_on_a_kept_alive_connection(api: Api) -> None:
    # The first decision is the protocol's; the requests behind it wait for its answer and then
    # take uvicorn's ASGI path (the protocol answers only with nothing else in flight).
    client, engine, made = api
    token = made["runtime"]
    with Wire(str(client.base_url)) as wire:
        wire.send(decision_request(token, 1) + b"GET /healthz HTTP/1.1\r\nHost: arm\r\n\r\n" + decision_request(token, 2))
        first, health, second = wire.response(), wire.response(), wire.response()
        assert first[0] == 200 and json.loads(first[2])["decision"] == "ALLOW"
        assert health[0] == 200 and json.loads(health[2]) == {"status": "ok"}
        assert second[0] == 200 and json.loads(second[2])["decisionId"] > json.loads(first[2])["decisionId"]
        assert first[1]["content-type"] == "application/json" and "date" in first[1] and "connection" not in first[1]
        wire.send(decision_request(token, 3))  # the connection stays open for the next call
        assert wire.response()[0] == 200
    assert stored_decisions(engine) == 3


def test_connection_close_http_1_0_and_an_oversized_body_close_the_connection(api: Api) -> None:
    client, engine, made = api
    token = made["runtime"]
    base = str(client.base_url)
    with Wire(base) as wire:
        wire.send(decision_request(token, 1, headers="Connection: close\r\n"))
        status, headers, _ = wire.response()
        assert (status, headers["connection"]) == (200, "close") and wire.closed()
    with Wire(base) as wire:
        wire.send(decision_request(token, 2, version="1.0"))
        assert wire.response()[0] == 200 and wire.closed()
    with Wire(base) as wire:
        wire.send(
            f"POST /v1/decisions HTTP/1.1\r\nHost: arm\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {decisions.MAX_BODY + 10}\r\n\r\n".encode()
            + b"x" * (decisions.MAX_BODY + 10)
        )
        status, headers, body = wire.response()
        # Refused on its declared length, before the body is read: the connection closes.
        assert (status, headers["connection"]) == (413, "close") and str(decisions.MAX_BODY) in body.decode()
        assert wire.closed()
    with Wire(base) as wire:
        wire.send(decision_request(token, 3))
        assert wire.response()[0] == 200
    assert stored_decisions(engine) == 3


def test_expect_100_continue_and_chunked_bodies_are_decided(api: Api) -> None:
    client, engine, made = api
    token = made["runtime"]
    request = decision_request(token, 1, headers="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    with Wire(str(client.base_url)) as wire:
        wire.send(head + b"\r\n\r\n")
        assert wire.response()[0] == 100
        wire.send(body)
        assert wire.response()[0] == 200
        payload = json.dumps({"instance": "acme:app-dev-g1-1", "tool": "crm.lookup"}).encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:10], payload[10:])) + b"0\r\n\r\n"
        wire.send(
            f"POST /v1/decisions HTTP/1.1\r\nHost: arm\r\nAuthorization: Bearer {token}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + chunked
        )
        status, _, answer = wire.response()
        assert status == 200 and json.loads(answer)["decision"] == "ALLOW"
    assert stored_decisions(engine) == 2


def test_a_decision_whose_caller_left_is_still_stored_and_the_server_goes_on(api: Api) -> None:
    client, engine, made = api
    with Wire(str(client.base_url)) as wire:
        wire.send(decision_request(made["runtime"], 1))
    deadline = time.monotonic() + 10
    while stored_decisions(engine) < 1:
        assert time.monotonic() < deadline, "the decision of a caller that left was never stored"
        time.sleep(0.02)
    answer = client.post(
        "/v1/decisions",
        json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"},
        headers={"Authorization": f"Bearer {made['runtime']}"},
    )
    assert answer.status_code == 200 and stored_decisions(engine) == 2


def test_the_protocol_answers_only_plain_decision_requests_and_hands_on_the_rest(api: Api) -> None:
    _, engine, made = api
    token = made["runtime"]
    seen: list[str] = []

    def server() -> Server:
        application = server_app.create_app(engine)

        async def elsewhere(scope: dict[str, Any], receive: Any, send: Any) -> None:
            """What uvicorn's ASGI path reaches: here it only notes that it was reached (and
            passes the lifespan on, which closes the application's decision writer)."""
            if scope["type"] != "http":
                await application(scope, receive, send)
                return
            seen.append(f"{scope['method']} {scope['path']} {scope['http_version']}")
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 418, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

        return Server(application, asgi=elsewhere)

    with server() as base, Wire(base) as wire:
        wire.send(decision_request(token, 1))
        assert wire.response()[0] == 200  # answered by the protocol itself
        for request in (
            decision_request(token, 2, target="/v1/decisions?trace=1"),
            b"GET /v1/decisions HTTP/1.1\r\nHost: arm\r\n\r\n",
            b"POST /v1/events HTTP/1.1\r\nHost: arm\r\nContent-Length: 2\r\n\r\n{}",
        ):
            wire.send(request)
            assert wire.response()[0] == 418
        head, body = decision_request(token, 3, headers="Expect: 100-continue\r\n").split(b"\r\n\r\n", 1)
        wire.send(head + b"\r\n\r\n" + body)
        assert [wire.response()[0], wire.response()[0]] == [100, 418]
    with server() as base, Wire(base) as wire:
        wire.send(decision_request(token, 4, version="1.0"))
        assert wire.response()[0] == 418
    assert seen == [
        "POST /v1/decisions 1.1",
        "GET /v1/decisions 1.1",
        "POST /v1/events 1.1",
        "POST /v1/decisions 1.1",
        "POST /v1/decisions 1.0",
    ]
    assert stored_decisions(engine) == 1


@pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)
def test_a_fault_in_the_route_answers_uvicorns_500_and_closes(api: Api, transport: str, caplog: Any) -> None:
    _, engine, made = api
    application: Any = server_app.create_app(engine)

    class Faulty(decisions.DecisionRoute):
        """A bug cannot be made on demand: this route raises where the real one decides."""

        def answer_soon(self, raw: bytes, authorization: str | None, reply: decisions.Reply) -> None:
            raise RuntimeError("a bug in the decision route")

    route = application.decision_route
    application.decision_route = Faulty(route.decider, route.lookup, route.peek, route.counters)
    server = Server(application, transport)  # configures uvicorn's logging, dropping handlers
    uvicorn_log = logging.getLogger("uvicorn.error")  # both paths report there; it does not propagate
    uvicorn_log.addHandler(caplog.handler)
    with contextlib.ExitStack() as stack:
        stack.callback(uvicorn_log.removeHandler, caplog.handler)
        wire = stack.enter_context(Wire(stack.enter_context(server)))
        wire.send(decision_request(made["runtime"], 1))
        status, headers, body = wire.response()
        assert (status, headers["connection"], body) == (500, "close", b"Internal Server Error")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert wire.closed()
    assert any(r.exc_info and "a bug in the decision route" in str(r.exc_info[1]) for r in caplog.records)
    assert stored_decisions(engine) == 0


def test_an_answer_given_while_parsing_leaves_no_keep_alive_timeout_on_the_next_request(api: Api) -> None:
    # A 401 is answered while uvicorn still parses the data it came in; a slow request right
    # behind it in the same data must not be cut off by the keep-alive timeout that answer started.
    _, engine, _ = api
    application = server_app.create_app(engine)

    async def slow_or_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/slow":
            await asyncio.sleep(1.5)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await application(scope, receive, send)

    with Server(application, asgi=slow_or_app, timeout_keep_alive=0.5) as base, Wire(base) as wire:
        wire.send(
            decision_request("arm_unknown", 1).replace(b"Authorization: Bearer arm_unknown\r\n", b"")
            + b"GET /slow HTTP/1.1\r\nHost: arm\r\n\r\n"
        )
        assert [wire.response()[0], wire.response()[0]] == [401, 200]
        # And once idle, the keep-alive timeout closes the connection: ``closed`` reads until the
        # server closes it (within the socket's 10 s timeout, whatever the host's load).
        assert wire.closed()


def test_a_token_in_a_chunked_bodys_trailer_does_not_count(api: Api) -> None:
    # uvicorn adds a chunked body's trailers to the request's headers before an ASGI application
    # runs, for every route; the protocol reads the token with the headers.
    client, engine, made = api
    payload = json.dumps({"instance": "acme:app-dev-g1-1", "tool": "crm.lookup"}).encode()
    with Wire(str(client.base_url)) as wire:
        wire.send(
            b"POST /v1/decisions HTTP/1.1\r\nHost: arm\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n" % (len(payload), payload)
            + f"Authorization: Bearer {made['runtime']}\r\n\r\n".encode()
        )
        status, _, body = wire.response()
        assert status == 401 and "missing bearer token" in json.loads(body)["message"]
    assert stored_decisions(engine) == 0


def test_after_a_decision_the_loop_polls_for_the_idle_poll_time_then_sleeps(api: Api) -> None:
    _, engine, made = api
    application = server_app.create_app(engine)
    server = Server(application, idle_poll_seconds=0.3)
    poll = server.options["http"].idle_poll
    assert protocol.options(application)["http"].idle_poll is None  # 0: no polling

    def polled_for() -> float:
        """From the answer until the loop stops polling, in seconds."""
        answered = time.monotonic()
        while poll.polling:
            assert time.monotonic() - answered < 10, "the loop never stopped polling"
            time.sleep(0.005)
        return time.monotonic() - answered

    with server as base, Wire(base) as wire:
        assert (poll.rounds, poll.polling) == (0, False)
        wire.send(decision_request(made["runtime"], 1))
        assert wire.response()[0] == 200
        deadline = time.monotonic() + 5
        while poll.rounds == 0:  # it starts right after the answer is written
            assert time.monotonic() < deadline, "the loop did not poll after the answer"
            time.sleep(0.001)
        assert polled_for() > 0.2  # the answer came moments before the window started
        rounds = poll.rounds
        assert rounds > 10  # it went round the loop again and again, not once
        # Then it sleeps: nothing runs. (A wait that proves an absence; a busy host only makes it
        # less likely that a spurious round would show, never makes a correct loop fail.)
        time.sleep(0.1)
        assert poll.rounds == rounds and not poll.polling
        wire.send(decision_request(made["runtime"], 2))  # the next decision polls again
        assert wire.response()[0] == 200
        deadline = time.monotonic() + 5
        while poll.rounds == rounds:
            assert time.monotonic() < deadline, "the loop did not poll after the second answer"
            time.sleep(0.001)
        assert polled_for() > 0.2
    assert stored_decisions(engine) == 2
