"""Risk assessment and redaction agree on what a secret is."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.policy import risk

SECRET = "hunter22-not-a-key"


@pytest.mark.parametrize(
    "args",
    [
        {"password": SECRET},
        {"db.password": SECRET},
        {"password[0]": SECRET},
        {"password.old": SECRET},
        {"token.x": SECRET},
        {"x.token": SECRET},
        {"nested": {"a.api_key": SECRET}},
        {"passwords": [SECRET]},
        {"password": [SECRET, {"note": "x"}]},
        {"items": [{"secret": SECRET}]},
        {"p[0].token": SECRET},
        {"note": "sk-abcdefghijklmnopqrstuvwx"},
        {"password": "short"},
        {"customer": SECRET},
    ],
)
def test_a_value_assessed_as_a_secret_is_exactly_one_that_is_redacted(args: dict[str, Any]) -> None:
    assessed = risk.assess("GREEN", args)
    flagged = any("secret-like" in reason for reason in assessed.reasons)
    redacted = risk.redact(args)
    assert flagged == (redacted != args), (assessed.reasons, redacted)
    if flagged:
        assert SECRET not in str(redacted) and "sk-abc" not in str(redacted)


def test_a_secret_under_an_indexed_key_is_redacted() -> None:
    # Assessing read "password[0]" as "password" (RED) while redacting did not: stored in the clear.
    assert risk.assess("GREEN", {"password[0]": SECRET}).level == "RED"
    assert risk.redact({"password[0]": SECRET, "n": 1}) == {"password[0]": risk.REDACTED, "n": 1}
