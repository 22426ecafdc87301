"""A small server speaking OPA's REST protocol, evaluating with the embedded engine.

A test double, and only that: no OPA binary can be installed from this project's package
registries, so the OPA engine (opa-python-client) is exercised against this server, which
implements the parts of OPA's API the engine uses — ``/health``, ``GET/PUT/DELETE
/v1/policies/{id}``, ``PUT /v1/data/{path}`` and ``POST /v1/data[/{path}]`` with ``{"input"}``
— on top of regorus, as OPA's server does them: a path's segments are URL-decoded and one of
digits is a number; a missing or null input is no input; a policy write or delete that leaves a
module calling a function no module defines is refused with 400, as OPA's compiler refuses it.
``writes`` records every write it took, in order. When an ``opa`` binary is on PATH the shared
decision table also runs against the real OPA (see test_decision_table.py).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import unquote

import regorus


class _State:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        # Set by a test to answer every write with 500, as an OPA behind a failing proxy would.
        self.refuse_writes = False
        self.writes: list[tuple[str, str]] = []  # (method, path) of each write taken
        # A regorus engine must live and die on the thread that made it: the server's.
        self.local = threading.local()

    @property
    def engine(self) -> Any:
        if getattr(self.local, "engine", None) is None:
            self.rebuild()
        return self.local.engine

    def rebuild(self) -> None:
        self.local.engine = None
        engine = regorus.Engine()
        for policy_id, text in self.policies.items():
            engine.add_policy(policy_id, text)
        engine.add_data_json(json.dumps(self.data))
        self.local.engine = engine

    def pristine(self) -> Any:
        """An engine that was never given an input (regorus cannot take one back)."""
        engine = regorus.Engine()
        for policy_id, text in self.policies.items():
            engine.add_policy(policy_id, text)
        engine.add_data_json(json.dumps(self.data))
        return engine

    def change_policies(self, policies: dict[str, str]) -> str | None:
        """Take ``policies`` if they compile as OPA would have them; else keep the old and say why."""
        previous = self.policies
        self.policies = policies
        try:
            self.rebuild()
            # regorus finds a call of an undefined function only when it evaluates it: evaluate all.
            self.pristine().eval_query("data")
        except RuntimeError as exc:
            message = str(exc).split("Stack backtrace:")[0]
            if "could not find function" not in message and self.local.engine is not None:
                return None  # evaluating with no input failed at run time, which OPA's compiler does not see
            self.policies = previous
            self.rebuild()
            return message
        return None


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
            refused = self.state.change_policies({**self.state.policies, policy_id: self._body().decode()})
            if refused is not None:
                self._reply(400, {"code": "invalid_parameter", "message": refused, "errors": []})
                return
            self.state.writes.append(("PUT", self.path))
            self._reply(200, {})
        elif self.path.startswith("/v1/data/"):
            path = [unquote(part) for part in self.path[len("/v1/data/") :].split("/")]
            node = self.state.data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = json.loads(self._body() or b"{}")
            self.state.rebuild()
            self.state.writes.append(("PUT", self.path))
            self._reply(204)
        else:
            self._reply(404, {"code": "resource_not_found", "message": self.path})

    def do_DELETE(self) -> None:
        policy_id = self.path[len("/v1/policies/") :]
        if not self.path.startswith("/v1/policies/") or policy_id not in self.state.policies:
            self._reply(404, {"code": "resource_not_found", "message": self.path})
            return
        refused = self.state.change_policies({k: v for k, v in self.state.policies.items() if k != policy_id})
        if refused is not None:
            self._reply(400, {"code": "invalid_parameter", "message": refused, "errors": []})
            return
        self.state.writes.append(("DELETE", self.path))
        self._reply(200, {})

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path != "/v1/data" and not path.startswith("/v1/data/"):
            self._reply(404, {"code": "resource_not_found", "message": self.path})
            return
        keys = [_key(unquote(part)) for part in path[len("/v1/data") :].split("/") if part]
        query = "data" + "".join(f"[{json.dumps(key)}]" for key in keys)
        try:
            document = json.loads(self._body() or b"{}")
        except json.JSONDecodeError as exc:
            self._reply(400, {"code": "invalid_parameter", "message": f"body contains malformed input document: {exc}"})
            return
        given = document.get("input")
        engine = self.state.pristine() if given is None else self.state.engine
        if given is not None:
            engine.set_input_json(json.dumps(given))
        try:
            rows = engine.eval_query(query)["result"]
        except RuntimeError as exc:
            self._reply(500, {"code": "internal_error", "message": str(exc).split("Stack backtrace:")[0]})
            return
        self._reply(200, {"result": _jsonable(rows[0]["expressions"][0]["value"])} if rows else {})


def _key(part: str) -> str | int:
    # OPA's server reads a segment that Go's strconv.Atoi takes as a number.
    return int(part) if re.fullmatch(r"[+-]?[0-9]+", part) else part


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
