"""A small server speaking OPA's REST protocol, evaluating with the real OPA engine.

The server side of the protocol the project's OPA client (``policy.opa.OpaEngine``) talks to:
``/health``, ``GET/PUT/DELETE /v1/policies/{id}``, ``PUT /v1/data/{path}`` and ``POST
/v1/data[/{path}]`` with ``{"input"}``, as OPA's server does them, over OPA's own Go engine in
process (``policy.goopa``): a path's segments are URL-decoded and one of digits is a number; a
missing or null input is no input; a policy write or delete that leaves the modules not
compiling (a parse error, a function no module defines) is refused with 400 and changes nothing;
an evaluation error is a 500. ``writes`` records every write it took, in order. No ``opa``
binary can be installed from this project's package registries; OPA's engine itself can, and
this is its server around it (HTTP handling only).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import unquote

from reconciler import errors
from reconciler.policy import engines, goopa
from tests import realopa


class _State:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        # Set by a test to answer every write with 500, as an OPA behind a failing proxy would.
        self.refuse_writes = False
        self.writes: list[tuple[str, str]] = []  # (method, path) of each write taken
        self.engine: Any = goopa.build({})

    def change(self, policies: dict[str, str], data: dict[str, Any]) -> str | None:
        """Take ``policies`` and ``data`` if they compile as OPA has them; else keep the old and say why."""
        try:
            engine = goopa.build(policies, data)
        except errors.PolicyError as exc:
            return str(exc)
        self.engine.close()
        self.engine, self.policies, self.data = engine, policies, data
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
            refused = self.state.change({**self.state.policies, policy_id: self._body().decode()}, self.state.data)
            if refused is not None:
                self._reply(400, {"code": "invalid_parameter", "message": refused, "errors": []})
                return
            self.state.writes.append(("PUT", self.path))
            self._reply(200, {})
        elif self.path.startswith("/v1/data/"):
            path = [unquote(part) for part in self.path[len("/v1/data/") :].split("/")]
            data = json.loads(json.dumps(self.state.data))
            node = data
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = json.loads(self._body() or b"{}")
            refused = self.state.change(self.state.policies, data)
            if refused is not None:
                self._reply(400, {"code": "invalid_parameter", "message": refused})
                return
            self.state.writes.append(("PUT", self.path))
            self._reply(204)
        else:
            self._reply(404, {"code": "resource_not_found", "message": self.path})

    def do_DELETE(self) -> None:
        policy_id = self.path[len("/v1/policies/") :]
        if not self.path.startswith("/v1/policies/") or policy_id not in self.state.policies:
            self._reply(404, {"code": "resource_not_found", "message": self.path})
            return
        refused = self.state.change({k: v for k, v in self.state.policies.items() if k != policy_id}, self.state.data)
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
        ref = engines.data_ref([unquote(part) for part in path[len("/v1/data") :].split("/")])
        try:
            document = json.loads(self._body() or b"{}")
        except json.JSONDecodeError as exc:
            self._reply(400, {"code": "invalid_parameter", "message": f"body contains malformed input document: {exc}"})
            return
        if not isinstance(document, dict):
            self._reply(400, {"code": "invalid_parameter", "message": "body must be an object"})
            return
        opa = goopa.bindings()
        try:
            rows = self.state.engine.eval_query(f"__result__ := {ref}", document.get("input"))
        except opa.OpaError as exc:
            self._reply(500, {"code": "internal_error", "message": goopa.message(exc)})
            return
        self._reply(200, {"result": rows[0]["__result__"]} if rows else {})


class OpaDouble:
    """Serve on an ephemeral loopback port in one thread."""

    def __init__(self) -> None:
        realopa.require()
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
