"""A small server speaking OPA's REST protocol, evaluating with the embedded engine.

A test double, and only that: no OPA binary can be installed from this project's package
registries, so the OPA engine (opa-python-client) is exercised against this server, which
implements the parts of OPA's API the engine uses — ``/health``, ``GET/PUT/DELETE
/v1/policies/{id}``, ``PUT /v1/data/{path}`` and ``POST /v1/data/{path}`` with ``{"input"}``
— on top of regorus. When an ``opa`` binary is on PATH the shared decision table also runs
against the real OPA (see test_decision_table.py).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import regorus


class _State:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        # Set by a test to answer every write with 500, as an OPA behind a failing proxy would.
        self.refuse_writes = False
        # A regorus engine must live and die on the thread that made it: the server's.
        self.local = threading.local()

    @property
    def engine(self) -> Any:
        if getattr(self.local, "engine", None) is None:
            self.rebuild()
        return self.local.engine

    def rebuild(self) -> None:
        engine = regorus.Engine()
        for policy_id, text in self.policies.items():
            engine.add_policy(policy_id, text)
        engine.add_data_json(json.dumps(self.data))
        self.local.engine = engine


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, code: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {})
        elif self.path.rstrip("/") == "/v1/policies":
            self._reply(200, {"result": [{"id": k, "raw": v} for k, v in self.state.policies.items()]})
        else:
            self._reply(404, {"code": "resource_not_found", "message": self.path})

    def do_PUT(self) -> None:
        if self.state.refuse_writes:
            self._reply(500, {"code": "internal_error", "message": "writes refused"})
            return
        if self.path.startswith("/v1/policies/"):
            policy_id = self.path[len("/v1/policies/") :]
            previous = dict(self.state.policies)
            self.state.policies[policy_id] = self._body().decode()
            try:
                self.state.rebuild()
            except RuntimeError as exc:
                self.state.policies = previous
                self.state.rebuild()
                self._reply(400, {"code": "invalid_parameter", "message": str(exc).split("Stack backtrace:")[0], "errors": []})
                return
            self._reply(200, {})
        elif self.path.startswith("/v1/data/"):
            path = self.path[len("/v1/data/") :].split("/")
            node = self.state.data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = json.loads(self._body() or b"{}")
            self.state.rebuild()
            self._reply(204)
        else:
            self._reply(404, {"code": "resource_not_found", "message": self.path})

    def do_DELETE(self) -> None:
        policy_id = self.path[len("/v1/policies/") :]
        if self.path.startswith("/v1/policies/") and self.state.policies.pop(policy_id, None) is not None:
            self.state.rebuild()
            self._reply(200, {})
        else:
            self._reply(404, {"code": "resource_not_found", "message": self.path})

    def do_POST(self) -> None:
        if not self.path.startswith("/v1/data/"):
            self._reply(404, {"code": "resource_not_found", "message": self.path})
            return
        rule = "data." + self.path[len("/v1/data/") :].split("?")[0].replace("/", ".")
        document = json.loads(self._body() or b"{}")
        engine = self.state.engine
        engine.set_input_json(json.dumps(document.get("input", {})))
        try:
            value = engine.eval_rule(rule)
        except RuntimeError as exc:
            self._reply(500, {"code": "internal_error", "message": str(exc).split("Stack backtrace:")[0]})
            return
        self._reply(200, {} if value is None else {"result": _jsonable(value)})


def _jsonable(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class OpaDouble:
    """Serve on an ephemeral loopback port in one thread (one regorus engine, one thread)."""

    def __init__(self) -> None:
        state = _State()
        handler = type("Handler", (_Handler,), {"state": state})
        self.state = state
        self.server = HTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OpaDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
