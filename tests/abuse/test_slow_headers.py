"""A connection that drips its request headers is cut off; the server keeps answering others.

Reproduces issue 15's item 5: ~20,000 connections sending headers a byte at a time were never
timed out, used up the open-file limit, and 70 of 86 probe decisions failed. uvicorn times out
only idle keep-alive connections; ``server.protocol`` also closes one whose headers take longer
than ``header_seconds`` (``protocol.HEADER_SECONDS`` in production).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from reconciler.server import app as server_app
from reconciler.server import guarding, protocol
from tests.server.serving import Server, auth

Api = tuple[httpx.Client, sa.Engine, dict[str, str]]


class _Timed(Server):
    """The API served as ``armctl serve`` does, with a short header timeout."""

    def __init__(self, app: object, seconds: float) -> None:
        super().__init__(app)
        self.options = protocol.options(app, header_seconds=seconds)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **self.options))
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)


@pytest.fixture
def timed(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    _, engine, made = api
    # The body timeout (a setting, 30 s) shortened so the test waits half a second for it.
    monkeypatch.setattr(guarding, "BODY_SECONDS", 0.5)
    with _Timed(server_app.create_app(engine), 0.5) as base:
        yield base, made


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Keeps dripping header bytes until the server closes the connection or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X")
            sock.settimeout(0.05)
            if sock.recv(1) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_connections_that_drip_headers_are_closed_and_others_are_answered(timed: tuple[str, dict[str, str]]) -> None:
    base, made = timed
    url = urlsplit(base)
    slow = []
    for _ in range(20):
        sock = socket.create_connection((url.hostname, url.port), timeout=5)
        sock.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: arm\r\nX-Slow: ")
        slow.append(sock)
    idle = socket.create_connection((url.hostname, url.port), timeout=5)  # never sends a byte
    try:
        deadline = time.monotonic() + 10
        assert all(_closed_by_server(sock, deadline) for sock in slow)
        idle.settimeout(max(0.1, deadline - time.monotonic()))
        assert idle.recv(1) == b""  # closed too
        answer = httpx.post(
            f"{base}/v1/decisions", json={"instance": "acme:app-dev-g1-0", "tool": "crm.lookup"}, headers=auth(made["runtime"])
        )
        assert answer.status_code == 200 and answer.json()["decision"] == "ALLOW"
    finally:
        for sock in [*slow, idle]:
            sock.close()


def test_a_body_that_does_not_arrive_in_time_is_refused(timed: tuple[str, dict[str, str]]) -> None:
    base, made = timed
    url = urlsplit(base)
    for path in ("/v1/decisions", "/v1/events"):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: arm\r\nAuthorization: Bearer {made['runtime']}\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), (path, answer[:200])
