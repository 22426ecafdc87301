"""The OPA engine: the same policy, evaluated by a real OPA server over its REST API.

Implements ``engines.Engine``: pushes through opa-python-client, queries through OPA's Data API
on a session of its own. ``load`` writes a revision's data where the bundle has it
(``data.arm.fleet``, one document per key under a top-level key: ``data.arm`` itself holds the
library's packages, and OPA refuses data written over a path its rules define), then its modules
under ids the reconciler owns (``arm-reconciler/<path>``), then deletes the ones the revision no
longer has. OPA takes one module per request, so a push is not atomic: the order keeps every
state it passes through loadable — data before the modules that read it, a module OPA refuses
for want of one not pushed yet is tried again after the others, stale modules go last (first only
when a module still there stands in the way). A push that fails re-pushes the previous revision,
so decisions stay on the last good one, and raises ``PolicyError`` for status to show. A sidecar
that must never see a mixed revision pulls the bundle instead (``decisions.bundling``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from opa_client import OpaClient
from opa_client import errors as opa_errors

from reconciler import errors
from reconciler.policy import engines

__all__ = ["PREFIX", "OpaEngine"]

PREFIX = "arm-reconciler"

# opa-python-client's errors share no base class.
_FAILURES = (
    opa_errors.ConnectionsError,
    opa_errors.DeletePolicyError,
    opa_errors.PathNotFoundError,
    opa_errors.PolicyNotFoundError,
    opa_errors.QueryExecuteError,
    opa_errors.RegoParseError,
    opa_errors.TypeException,
    requests.RequestException,
    ValueError,
)


class OpaEngine:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ConfigError(f"OPA URL {url!r} must be http(s)://host:port")
        self.url = url
        self._timeout = timeout
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https",
            token=token,
            timeout=timeout,
        )
        self._data_url = f"{self._client.root_url}/data"
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._bundle: engines.Bundle | None = None
        self._lock = threading.Lock()

    @property
    def revision(self) -> str | None:
        return None if self._bundle is None else self._bundle.revision

    def load(self, bundle: engines.Bundle) -> None:
        with self._lock:
            try:
                self._push(bundle)
            except _FAILURES as exc:
                if self._bundle is not None:
                    with contextlib.suppress(*_FAILURES):  # the original error is the one to report
                        self._push(self._bundle)
                raise errors.PolicyError(f"pushing policy revision {bundle.revision} to OPA at {self.url} failed: {exc}") from exc
            self._bundle = bundle

    def _push(self, bundle: engines.Bundle) -> None:
        for path, document in _documents(bundle.data):  # checked whole before anything is written
            self._client.update_or_create_data(document, path)
        wanted = {f"{PREFIX}/{path}": text for path, text in bundle.modules.items()}
        stale = [i for i in self._client.get_policies_list() if i.startswith(PREFIX + "/") and i not in wanted]
        pending = dict(wanted)
        while pending:
            refused = self._push_modules(pending)
            if len(refused) == len(pending):
                if not stale:
                    raise next(iter(refused.values()))
                self._delete(stale)  # a module the revision drops may be what OPA refuses the others for
                stale = []
            pending = {policy_id: wanted[policy_id] for policy_id in refused}
        self._delete(stale)

    def _push_modules(self, modules: Mapping[str, str]) -> dict[str, opa_errors.RegoParseError]:
        """Push each of ``modules``; those OPA refuses to compile (yet), with why."""
        refused = {}
        for policy_id, text in modules.items():
            try:
                self._client.update_policy_from_string(text, policy_id, rego_compat=False)
            except opa_errors.RegoParseError as exc:
                if exc.expression != "invalid_parameter":  # not a compile error: the server failed
                    raise
                refused[policy_id] = exc
        return refused

    def _delete(self, policy_ids: Sequence[str]) -> None:
        for policy_id in policy_ids:
            self._client.delete_policy(policy_id)

    def query(self, path: Sequence[str], input: Any | None) -> dict[str, Any]:
        return self._data(path, input, "data/" + "/".join(path))

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        if rule != "data" and not rule.startswith("data."):
            raise errors.PolicyError(f"rule {rule!r} must start with data.")
        return self._data(rule.split(".")[1:], input, rule).get("result")

    def _data(self, path: Sequence[str], input: Any | None, what: str) -> dict[str, Any]:
        # OPA takes a missing and a null input alike: as no input.
        url = "/".join([self._data_url, *(quote(part, safe="") for part in path if part)])
        try:
            response = self._session.post(url, json={"input": input}, timeout=self._timeout)
            response.raise_for_status()
            answer = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise errors.PolicyError(f"evaluating {what} on OPA at {self.url}: {exc}") from exc
        if not isinstance(answer, dict):
            raise errors.PolicyError(f"evaluating {what} on OPA at {self.url}: the answer is not a JSON object")
        return {"result": answer["result"]} if "result" in answer else {}


def _documents(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(OPA data path, document) for each key under each top-level key of ``data``."""
    out = []
    for top, documents in data.items():
        if not isinstance(documents, Mapping):
            raise errors.PolicyError(f"policy data {top!r} must be an object to push to OPA, not {type(documents).__name__}")
        out += [(f"{quote(top, safe='')}/{quote(key, safe='')}", document) for key, document in documents.items()]
    return out
