"""The delivery worker: POST each pending outbox row to its channel, signed, retried with backoff.

:func:`deliver_due` is one pass (the daemon runs it every ``notify_interval_seconds``; ``armctl
notifications deliver`` runs passes until nothing is due). A pass claims the rows that are due
(``claimed_until``, one conditional UPDATE per row, so two workers never send the same row at
once and a worker that died mid-send leaves a claim that runs out), sends each outside any
transaction, and records the outcome in a transaction of its own:

- a 2xx answer: ``DELIVERED``;
- anything else (refused connection, timeout, an HTTP error, the channel's environment variable
  unset): the attempt is counted, the error kept (never the URL: a webhook URL is a credential),
  and the row is due again after ``base × 2^(attempts-1)`` seconds, at most ``max_backoff``;
  after ``max_attempts`` it is ``FAILED``. The channel's later rows in the same pass wait with it,
  so a receiver that is down is not called once per row and gets its rows in order when it is back;
- a channel no longer in the applied fleet: ``FAILED`` at once.

Delivery is at least once: a receiver that answered after the worker's timeout, or a worker that
died between sending and recording, means the row is sent again with the same ``X-ARM-Delivery``
id, which receivers use to drop repeats. Bodies are signed with HMAC-SHA256 under the key in the
environment variable the channel names (``X-ARM-Signature-256: sha256=<hex>``, as GitHub signs its
webhooks). The URL and key are read from the environment at each send, never stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import http.client
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from reconciler import __version__
from reconciler import clock as clock_
from reconciler import settings as settings_
from reconciler.notifications import events
from reconciler.state import database, tables

__all__ = ["SIGNATURE_HEADER", "Outcome", "Passed", "Policy", "body_of", "deliver_due", "drain", "http_post", "sign", "verify"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-ARM-Signature-256"


@dataclasses.dataclass(frozen=True)
class Policy:
    """How hard the worker tries (``ARM_NOTIFY_*`` settings)."""

    max_attempts: int = 15
    base_seconds: float = 5.0
    max_backoff_seconds: float = 1800.0
    timeout_seconds: float = 5.0
    #: how long a claim holds a row: longer than a send can take
    claim_seconds: float = 120.0
    batch: int = 100

    @classmethod
    def of(cls, settings: settings_.Settings) -> Policy:
        return cls(max_attempts=settings.notify_max_attempts, timeout_seconds=settings.notify_timeout_seconds)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt, after ``attempts`` failed ones."""
        return float(min(self.base_seconds * 2 ** max(attempts - 1, 0), self.max_backoff_seconds))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one send got: an HTTP status (None: no answer) and, when it failed, why."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclasses.dataclass
class Passed:
    """What a pass (or a drain) did: row ids delivered, retrying later, given up on."""

    delivered: list[int] = dataclasses.field(default_factory=list)
    retrying: list[int] = dataclasses.field(default_factory=list)
    failed: list[int] = dataclasses.field(default_factory=list)
    #: claimed but not tried: their channel failed earlier in the pass
    deferred: list[int] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return dataclasses.asdict(self)

    def add(self, other: Passed) -> None:
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.failed += other.failed
        self.deferred += other.deferred


#: Sends ``body`` with ``headers`` to ``url`` within ``timeout`` seconds.
Post = Callable[[str, bytes, dict[str, str], float], Outcome]


def sign(secret: str, body: bytes) -> str:
    """The ``X-ARM-Signature-256`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature of the raw body, compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def deliver_due(
    db: database.Engine,
    clock: clock_.Clock,
    environ: Mapping[str, str],
    policy: Policy | None = None,
    post: Post | None = None,
) -> Passed:
    """One pass over the rows due now; see the module docstring."""
    policy = policy or Policy()
    post = post or http_post
    now = clock.now()
    with database.transaction(db) as connection:
        rows, channels = _claim(connection, now, policy)
    passed = Passed()
    down: dict[tuple[str, str], dt.datetime] = {}  # channels that failed in this pass → when to try again
    for row in rows:
        key = (row["tenant"], row["channel"])
        spec = channels.get(key)
        if key in down:
            _record(db, row, None, policy, clock.now(), passed, defer_until=down[key])
            continue
        if spec is None:
            outcome = Outcome(None, f"channel {row['channel']!r} is no longer in the applied fleet")
            _record(db, row, outcome, policy, clock.now(), passed, final=True)
            continue
        outcome = _send(row, spec, environ, policy, post)
        retry_at = _record(db, row, outcome, policy, clock.now(), passed)
        if retry_at is not None:
            down[key] = retry_at
            log.warning("notification %d to channel %s/%s failed: %s", row["id"], row["tenant"], row["channel"], outcome.error)
    return passed


def drain(
    db: database.Engine,
    clock: clock_.Clock,
    environ: Mapping[str, str],
    policy: Policy | None = None,
    post: Post | None = None,
) -> Passed:
    """Passes until a pass finds nothing due (a failed row is due again only after its backoff)."""
    total = Passed()
    while True:
        passed = deliver_due(db, clock, environ, policy, post)
        total.add(passed)
        if not (passed.delivered or passed.retrying or passed.failed):
            return total


def _claim(connection: sa.Connection, now: dt.datetime, policy: Policy) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    o = tables.notification_outbox
    free = sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until < now)
    # A channel whose earlier row waits out its backoff holds its later rows back: they go after
    # it, in order, a receiver that is down is not called for each new row, and a backlog of
    # rows held back never fills the batch ahead of other channels' rows.
    waiting = (
        sa.select(o.c.tenant, o.c.channel, sa.func.min(o.c.id))
        .where(o.c.status == "PENDING", o.c.next_attempt_at > now)
        .group_by(o.c.tenant, o.c.channel)
    )
    held = [
        sa.not_(sa.and_(o.c.tenant == tenant, o.c.channel == channel, o.c.id > first))
        for tenant, channel, first in connection.execute(waiting)
    ]
    due = connection.execute(
        sa.select(o).where(o.c.status == "PENDING", o.c.next_attempt_at <= now, free, *held).order_by(o.c.id).limit(policy.batch)
    ).mappings().all()  # fmt: skip
    claimed = []
    until = now + dt.timedelta(seconds=policy.claim_seconds)
    for row in due:
        taken = connection.execute(
            o.update().where(o.c.id == row["id"], o.c.status == "PENDING", free).values(claimed_until=until)
        ).rowcount
        if taken == 1:
            claimed.append(dict(row))
    c = tables.notification_channels.c
    keys = {(r["tenant"], r["channel"]) for r in claimed}
    channels: dict[Any, Any] = {}
    if keys:
        query = sa.select(c.tenant, c.name, c.spec).where(c.status == "ACTIVE", c.tenant.in_({t for t, _ in keys}))
        channels = {(r.tenant, r.name): r.spec for r in connection.execute(query) if (r.tenant, r.name) in keys}
    return claimed, channels


def body_of(row: dict[str, Any], spec: dict[str, Any]) -> bytes:
    """The bytes sent for an outbox row: the generic JSON document, or a Slack message."""
    payload = row["payload"]
    if spec.get("format") == "slack":
        return orjson.dumps({"text": events.slack_text(payload)})
    document = {"id": row["id"], "channel": row["channel"], "at": row["created_at"].isoformat(), **payload}
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _send(row: dict[str, Any], spec: dict[str, Any], environ: Mapping[str, str], policy: Policy, post: Post) -> Outcome:
    url_var = (spec.get("url") or {}).get("fromEnv", "")
    url = environ.get(url_var, "")
    if not url:
        return Outcome(None, f"environment variable {url_var} (the channel's URL) is not set")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"arm-reconciler/{__version__}",
        "X-ARM-Event": row["event"],
        "X-ARM-Delivery": str(row["id"]),
    }
    body = body_of(row, spec)
    secret_var = (spec.get("secret") or {}).get("fromEnv")
    if secret_var:
        secret = environ.get(secret_var, "")
        if not secret:
            # Fail closed: an unsigned body is never sent where a signed one is expected.
            return Outcome(None, f"environment variable {secret_var} (the channel's signing key) is not set")
        headers[SIGNATURE_HEADER] = sign(secret, body)
    outcome = post(url, body, headers, policy.timeout_seconds)
    if outcome.error and url in outcome.error:
        outcome = Outcome(outcome.status, outcome.error.replace(url, "<url>"))
    return outcome


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Outcome:
    """POST through the standard library; redirects are not followed (a redirect is a failure)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Outcome(None, "the channel's URL is not an http(s) URL")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = cls(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(65536)  # bounded: the answer is not used
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return Outcome(response.status)
    return Outcome(response.status, f"HTTP {response.status} {response.reason}"[:500])


def _record(
    db: database.Engine,
    row: dict[str, Any],
    outcome: Outcome | None,
    policy: Policy,
    now: dt.datetime,
    passed: Passed,
    *,
    final: bool = False,
    defer_until: dt.datetime | None = None,
) -> dt.datetime | None:
    """Store what an attempt got; when it is to be retried, the time of the next attempt."""
    o = tables.notification_outbox
    values: dict[str, Any] = {"claimed_until": None}
    retry_at = None
    if outcome is None:  # not tried: its channel is down; due again with the row that failed
        values["next_attempt_at"] = defer_until
        passed.deferred.append(row["id"])
    elif outcome.ok:
        values |= {"status": "DELIVERED", "attempts": row["attempts"] + 1, "delivered_at": now, "last_status": outcome.status,
                   "last_error": None}  # fmt: skip
        passed.delivered.append(row["id"])
    else:
        attempts = row["attempts"] + 1
        values |= {"attempts": attempts, "last_status": outcome.status, "last_error": outcome.error}
        if final or attempts >= policy.max_attempts:
            values["status"] = "FAILED"
            passed.failed.append(row["id"])
        else:
            retry_at = now + dt.timedelta(seconds=policy.backoff(attempts))
            values["next_attempt_at"] = retry_at
            passed.retrying.append(row["id"])
    with database.transaction(db) as connection:
        connection.execute(o.update().where(o.c.id == row["id"]).values(**values))
    return retry_at
