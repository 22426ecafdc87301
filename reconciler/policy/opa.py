"""The OPA engine: the same policy, evaluated by a real OPA server over its REST API.

Implements ``engines.Engine`` with opa-python-client. ``load`` pushes every module of a
revision under ids the reconciler owns (``arm-reconciler/<path>``), deletes the ones the new
revision no longer has, and writes the data under ``data.arm_reconciler``; a push that fails
re-pushes the previous revision, so decisions stay on the last good one, and raises
``PolicyError`` for status to show. ``evaluate`` queries one rule through the Data API.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https",
            token=token,
            timeout=timeout,
        )
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
        wanted = {f"{PREFIX}/{path}": text for path, text in bundle.modules.items()}
        for policy_id, text in wanted.items():
            self._client.update_policy_from_string(text, policy_id, rego_compat=False)
        for policy_id in self._client.get_policies_list():
            if policy_id.startswith(PREFIX + "/") and policy_id not in wanted:
                self._client.delete_policy(policy_id)
        self._client.update_or_create_data(dict(bundle.data), "arm_reconciler")

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        # OPA's Data API already answers any path, undefined ones with no result.
        return self.evaluate(path, input)

    def evaluate(self, rule: str, input: Mapping[str, Any]) -> Any:
        if not rule.startswith("data."):
            raise errors.PolicyError(f"rule {rule!r} must start with data.")
        package, _, name = rule[len("data.") :].rpartition(".")
        try:
            response = self._client.query_rule(input_data=dict(input), package_path=package, rule_name=name)
        except _FAILURES as exc:
            raise errors.PolicyError(f"evaluating {rule} on OPA at {self.url}: {exc}") from exc
        return response.get("result")
