"""Git push webhooks (GitHub, GitLab, and anything signing like GitHub): checked, then read.

A push to the followed branch triggers an immediate refresh instead of waiting for the next
poll. Nothing in the payload is trusted beyond "something was pushed": the daemon fetches and
reads the commit itself, so a forged ``after`` SHA could at worst cause one extra fetch — and
only with the shared secret. GitHub (and Gitea, Forgejo, Bitbucket Server) sign the body with
HMAC-SHA256 in ``X-Hub-Signature-256``; GitLab sends the secret itself in ``X-Gitlab-Token``.
Both are compared in constant time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from reconciler import errors

__all__ = ["Push", "follows", "verify"]


@dataclasses.dataclass(frozen=True)
class Push:
    provider: str  # github | gitlab
    event: str  # push | ping | the provider's event name
    ref: str | None  # refs/heads/main
    after: str | None  # the pushed SHA

    @property
    def is_push(self) -> bool:
        return self.event == "push"


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> Push:
    """The push described by a webhook request whose signature or token matches ``secret``.

    ``headers`` must have lower-case names. Raises ``Unauthenticated`` for a missing or wrong
    signature, ``ConfigError`` for a body that is not a JSON object.
    """
    signature = headers.get("x-hub-signature-256")
    token = headers.get("x-gitlab-token")
    if signature is not None:
        provider = "github"
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
            raise errors.Unauthenticated("webhook signature (X-Hub-Signature-256) does not match ARM_WEBHOOK_SECRET")
        event = headers.get("x-github-event", "push")
    elif token is not None:
        provider = "gitlab"
        if not hmac.compare_digest(token.encode(), secret.encode()):
            raise errors.Unauthenticated("webhook token (X-Gitlab-Token) does not match ARM_WEBHOOK_SECRET")
        event = "push" if headers.get("x-gitlab-event", "Push Hook") in ("Push Hook", "Tag Push Hook") else "other"
    else:
        raise errors.Unauthenticated(
            "webhook carries no signature: configure the secret (ARM_WEBHOOK_SECRET) in the Git host's webhook settings "
            "(GitHub: X-Hub-Signature-256, GitLab: X-Gitlab-Token)"
        )
    try:
        payload: Any = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"webhook body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise errors.ConfigError("webhook body must be a JSON object")
    ref, after = payload.get("ref"), payload.get("after")
    return Push(provider, event, ref if isinstance(ref, str) else None, after if isinstance(after, str) else None)


def follows(push: Push, followed_ref: str) -> bool:
    """Whether ``push`` may move ``followed_ref`` (a branch name, ``refs/heads/x``, HEAD or a SHA).

    A ref that is not a branch name (HEAD, a tag, a SHA) cannot be matched against the push
    safely, so every push refreshes: a fetch that finds nothing new costs one ``UNCHANGED``.
    """
    if not push.is_push:
        return False
    if push.ref is None or followed_ref == "HEAD" or followed_ref.startswith("refs/tags/"):
        return True
    wanted = followed_ref if followed_ref.startswith("refs/") else f"refs/heads/{followed_ref}"
    short = followed_ref.removeprefix("origin/")
    return push.ref in (wanted, f"refs/heads/{short}") or len(followed_ref) == 40
