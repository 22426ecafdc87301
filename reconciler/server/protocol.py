"""The HTTP server: uvicorn (uvloop, httptools), with ``POST /v1/decisions`` answered by its protocol.

A decision is what every tool call waits for; going through ASGI costs a task, an event, message
dicts and header checks per request, about 15 µs of the ~170 a decision may cost at the
throughput the service is built for. :class:`DecisionProtocol` is uvicorn's own httptools
protocol that, for the plainest form of that request — HTTP/1.1, exactly ``POST
/v1/decisions``, no ``Expect``/upgrade, nothing else in flight on the connection — collects the
body itself, hands it to ``DecisionRoute.answer_soon`` and writes the answer to the transport.
Anything else, including a request pipelined behind one in flight, takes uvicorn's ASGI path to
the same application, where ``app`` calls the same route: the answers are the same either way,
down to the 500 of a fault. (One difference: for ASGI uvicorn adds a chunked body's trailers to
the request's headers; the protocol reads the token with the headers, so one sent as a trailer
does not count.)

After it answers a decision the protocol can keep the event loop polling for the next request a
little while (:class:`IdlePoll`, ``ARM_IDLE_POLL_MICROSECONDS``) instead of letting its core
sleep: on a virtual machine a sleeping core takes long to wake, and everything the next decision
touches is colder for it.

The class leans on uvicorn's protocol internals (``cycle``, ``pipeline``, ``on_response_complete``):
``pyproject.toml`` pins uvicorn to the release it was written against, and tests/server runs the
API through it and through plain ASGI. :func:`options` is how ``armctl serve``, ``armctl run``
and the tests configure uvicorn.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from uvicorn.protocols.http import httptools_impl

from reconciler.server import decisions, guarding

__all__ = ["DecisionProtocol", "IdlePoll", "options"]

_PATH = b"/v1/decisions"
_JSON = b"application/json"
#: What uvicorn answers when an ASGI application raises.
_FAILED = (500, b"Internal Server Error", b"text/plain; charset=utf-8")


#: How long a connection may take to send a request's headers (from its first byte, or from the
#: connection or the previous answer): a client dripping them a byte at a time is cut off, so
#: thousands of such connections cannot hold the server's sockets.
HEADER_SECONDS = 10.0


def options(application: Any, idle_poll_seconds: float = 0.0, header_seconds: float = HEADER_SECONDS) -> dict[str, Any]:
    """uvicorn's options (``uvicorn.Config``, ``uvicorn.run``) for ``application`` (``app.create_app``);
    ``idle_poll_seconds``: how long the loop polls for the next request after a decision (0: not);
    ``header_seconds``: how long a request's headers may take (:data:`HEADER_SECONDS`)."""
    route = getattr(application, "decision_route", None)
    if route is None:
        http: Any = type("TimedProtocol", (TimedProtocol,), {"header_seconds": header_seconds})
    else:
        idle_poll = IdlePoll(idle_poll_seconds) if idle_poll_seconds > 0 else None
        http = type(
            "DecisionProtocol", (DecisionProtocol,), {"route": route, "idle_poll": idle_poll, "header_seconds": header_seconds}
        )
    # log_config None: uvicorn's loggers propagate to the root handler ``armctl`` configured, so
    # its error lines follow --log-format (json: one object a line, a traceback as a field).
    return {"http": http, "log_level": "warning", "access_log": False, "log_config": None}


class IdlePoll:
    """Keeps an event loop polling, not sleeping, for ``seconds`` after each decision it answers.

    A sleeping core on a virtual machine takes tens of microseconds to wake, and the decision
    that wakes it runs on cold caches: measured here with one runtime calling in a loop, a
    decision cost ~190 µs of CPU back to back and ~310 µs with the core asleep in between. While
    a callback is ready, uvloop polls its sockets without blocking, so this one re-schedules
    itself until the time is up — the idle polling of reactors such as Seastar's
    (``--idle-poll-time-us``). Under load the loop never idles and this costs nothing; at a
    trickle it costs up to ``seconds`` of CPU per decision. ``rounds`` counts the polls.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = 0.0
        self.rounds = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop polling now, if any

    @property
    def polling(self) -> bool:
        return self._loop is not None

    def answered(self, loop: asyncio.AbstractEventLoop) -> None:
        self.until = time.perf_counter() + self.seconds
        if self._loop is not loop:  # not polling, or a loop that stopped mid-window left it set
            self._loop = loop
            loop.call_soon(self._poll, loop)

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        self.rounds += 1
        if time.perf_counter() < self.until:
            loop.call_soon(self._poll, loop)
        elif self._loop is loop:
            self._loop = None


class _NoEvent:
    @staticmethod
    def set() -> None:
        pass


class _Exchange:
    """A decision request the protocol answers itself. It stands in for uvicorn's per-request
    cycle, with the attributes the protocol reads of one (so a request pipelined behind it waits,
    a shutdown closes the connection after it, a lost connection marks it)."""

    __slots__ = ("authorization", "chunks", "disconnected", "keep_alive", "response_complete", "size")
    message_event = _NoEvent

    def __init__(self, keep_alive: bool, authorization: str | None) -> None:
        self.authorization = authorization  # read with the headers: a chunked body's trailers do not count
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False


class TimedProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers take longer than
    ``header_seconds`` (uvicorn times out only idle keep-alive connections); a decision's body,
    which this protocol reads itself, gets ``guarding.BODY_SECONDS`` (the gate times the others)."""

    header_seconds: float = HEADER_SECONDS
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class DecisionProtocol(TimedProtocol):
    """uvicorn's httptools protocol, answering plain decision requests through ``route``."""

    route: decisions.DecisionRoute
    idle_poll: IdlePoll | None = None
    _exchange: _Exchange | None = None

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        # A request is under way: no keep-alive timeout. uvicorn cancels it only when data
        # arrives, but an answer given while the data is parsed (a 401, a 422) starts it again
        # with this request, which came in the same data, still to answer.
        self._unset_keepalive_if_required()
        parser = self.parser
        cycle = self.cycle
        if (
            self.url == _PATH
            and parser.get_method() == b"POST"
            and parser.get_http_version() == "1.1"
            and not self.expect_100_continue
            and not parser.should_upgrade()
            and (cycle is None or cycle.response_complete)
            and not self.flow.write_paused
            and self.limit_concurrency is None
            and not self.root_path
        ):
            authorization = decisions.authorization(self.headers)
            self._exchange = self.cycle = exchange = _Exchange(parser.should_keep_alive(), authorization)  # type: ignore[assignment]
            # Its body must arrive within the gate's time too (``guarding.BODY_SECONDS``).
            self._header_timer = self.loop.call_later(guarding.BODY_SECONDS, self._headers_too_slow)
            declared = next((v for k, v in self.headers if k == b"content-length"), None)
            if declared is not None and (not declared.isdigit() or int(declared) > decisions.MAX_BODY):
                exchange.keep_alive = False  # answered before the body: the connection closes on it
                self._reply(exchange, *self.route.refuse_too_large())
            return
        self._exchange = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            super().on_body(body)
            return
        if exchange.response_complete:
            return  # refused as too large: the rest is read and dropped, as uvicorn does
        exchange.size += len(body)
        if exchange.size > decisions.MAX_BODY:
            exchange.keep_alive = False  # the rest of the body is not read: the connection closes
            self._reply(exchange, *self.route.refuse_too_large())
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if exchange is None:
            super().on_message_complete()
            return
        self._stop_header_timer()
        self._exchange = None
        if exchange.response_complete:
            # Refused before its body ended (413): the data that followed cancelled the
            # keep-alive timeout its answer started; start it again unless a request is under way.
            if self.cycle is exchange and not self.transport.is_closing():
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            return
        chunks = exchange.chunks
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            self.route.answer_soon(raw, exchange.authorization, functools.partial(self._reply, exchange))
        except Exception:  # a bug: answered as uvicorn answers an ASGI application that raised
            self.logger.exception("Exception in the decision route")  # uvicorn's error log, as for ASGI
            exchange.keep_alive = False
            self._reply(exchange, *_FAILED)

    def _reply(self, exchange: _Exchange, status: int, body: bytes, content_type: bytes = _JSON) -> None:
        if exchange.response_complete:
            return
        exchange.response_complete = True
        transport = self.transport
        if exchange.disconnected or transport.is_closing():
            return
        head = [httptools_impl.STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"content-type: ", content_type, b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n")
        if not exchange.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", body)
        transport.write(b"".join(head))
        if not exchange.keep_alive:
            transport.close()
        self.on_response_complete()
        if self.idle_poll is not None:
            self.idle_poll.answered(self.loop)
