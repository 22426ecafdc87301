"""The real OPA engine (OPA's Go engine in process, ``policy.goopa``) for tests that need it.

It is a test dependency installed by ``scripts/install-opa-engine`` (``.ci/run`` runs it). Where
it is missing, a test that needs it fails in CI (``CI`` or ``ARM_REQUIRE_OPA_ENGINE`` set: a
skipped comparison would hide every difference between the engines) and is skipped on a
developer's machine, saying how to install it.
"""

from __future__ import annotations

import os

import pytest

from reconciler.policy import goopa

__all__ = ["require"]


def require() -> None:
    """Return when the real OPA engine can run; else fail (CI) or skip (a developer's machine)."""
    if goopa.available():
        return
    if os.environ.get("CI") or os.environ.get("ARM_REQUIRE_OPA_ENGINE"):
        pytest.fail(f"{goopa.INSTALL_HINT}; CI must compare against it", pytrace=False)
    pytest.skip(goopa.INSTALL_HINT)
