"""Console sessions: an operator token exchanged for a session cookie, and the forms' CSRF tokens.

Signing in (``POST /ui/login``) resolves the token exactly as the API does (``server.auth.Tokens``:
unknown, revoked and expired tokens are refused, only operator tokens may sign in) and opens a
session: a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to ``/ui``, expiring
after :data:`LIFETIME_SECONDS` (or earlier, with the token). The session keeps the token in this
process's memory only — never written to the store, a log or the page — and every request looks
it up again through the same one-second token cache, so a revoked token ends its sessions within
a second. Sessions do not outlive the process: after a restart the operator signs in again.

Every form carries the session's CSRF token (a second random value, compared in constant time),
and a state-changing request whose ``Origin`` names another site is refused before that.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time

__all__ = ["COOKIE", "LIFETIME_SECONDS", "Session", "Sessions"]

#: The session cookie's name.
COOKIE = "arm_session"

#: How long a session lasts after sign-in, whatever is done with it (8 hours: a working day).
LIFETIME_SECONDS = 8 * 3600

#: Sessions one process keeps at most; the oldest go first past it.
_MAX_SESSIONS = 10_000


@dataclasses.dataclass(frozen=True)
class Session:
    id: str
    token: str  # the operator token it stands for, held in memory only
    csrf: str
    expires: float  # time.time() seconds


class Sessions:
    """The sessions of one server process."""

    def __init__(self, lifetime_seconds: float = LIFETIME_SECONDS, now: object = time.time) -> None:
        self.lifetime = lifetime_seconds
        self._now = now
        self._lock = threading.Lock()
        self._open: dict[str, Session] = {}
        self._notices: dict[str, str] = {}

    def open(self, token: str) -> Session:
        session = Session(secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), self._time() + self.lifetime)
        with self._lock:
            if len(self._open) >= _MAX_SESSIONS:
                self._expire()
                while len(self._open) >= _MAX_SESSIONS:
                    self._open.pop(next(iter(self._open)))
            self._open[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's value; None when there is none (or it expired)."""
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None or session.expires <= self._time():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._open.pop(session_id, None)
                self._notices.pop(session_id, None)

    def notify(self, session_id: str, text: str) -> None:
        """What the next page of this session says on top (what a form just did)."""
        with self._lock:
            if session_id in self._open:
                self._notices[session_id] = text

    def take_notice(self, session_id: str) -> str | None:
        with self._lock:
            return self._notices.pop(session_id, None)

    def _time(self) -> float:
        return float(self._now())  # type: ignore[operator]

    def _expire(self) -> None:
        now = self._time()
        for key in [k for k, s in self._open.items() if s.expires <= now]:
            del self._open[key]
            self._notices.pop(key, None)


def csrf_matches(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
