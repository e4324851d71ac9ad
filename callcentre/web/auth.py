"""Sessions, CSRF tokens, log-in rate limiting and role declarations.

The session cookie is signed (HMAC-SHA256) and carries only the user id, a random session id and an
expiry; the role is read from the database on every request, so a deactivated user or a changed
role takes effect at once. The CSRF token is an HMAC of the session id: bound to the session,
nothing to store, and sent back by the page's JavaScript in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import structlog
from aiohttp import web

from callcentre.domain.users import EVERYONE, SUPERVISORS, UserRole

log = structlog.get_logger(__name__)

COOKIE_NAME = "cc_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600

F = TypeVar("F", bound=Callable[..., Any])


def roles(*allowed: UserRole) -> Callable[[F], F]:
    """Declare who may call a handler; the auth middleware refuses everyone else (default deny)."""

    def mark(handler: F) -> F:
        handler.__cc_roles__ = frozenset(allowed)  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: F) -> F:
    """A handler anyone may call (log-in, the OpenAPI file, static pages)."""
    handler.__cc_public__ = True  # type: ignore[attr-defined]
    return handler


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    sid: str
    expires: float


# Set by the auth middleware on every request: the session and its user (None when logged out).
SESSION_KEY = web.RequestKey("callcentre_session", Session)
USER_KEY = web.RequestKey("callcentre_user", object)



def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and checks session cookies; remembers logged-out sessions until they expire."""

    def __init__(self, key: str | None, *, max_revoked: int = 100_000) -> None:
        if not key:
            log.warning(
                "no web session key (CALLCENTRE_WEB_SESSION_KEY or web.session_key_file): using a random"
                " key for this process; everyone must log in again after a restart"
            )
            self._key = secrets.token_bytes(32)
        else:
            self._key = hashlib.sha256(("callcentre-session:" + key).encode("utf-8")).digest()
        self._revoked: OrderedDict[str, float] = OrderedDict()
        self._max_revoked = max_revoked

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode("ascii") + b"|" + data, hashlib.sha256).digest()

    def issue(self, user_id: int, now: float) -> tuple[str, Session]:
        session = Session(user_id=user_id, sid=secrets.token_hex(16), expires=now + SESSION_SECONDS)
        body = json.dumps({"u": user_id, "s": session.sid, "e": int(session.expires)}, separators=(",", ":")).encode()
        token = _b64(body) + "." + _b64(self._mac("session", body))
        return token, session

    def read(self, token: str | None, now: float) -> Session | None:
        if not token or len(token) > 512 or token.count(".") != 1:
            return None
        body_s, mac_s = token.split(".")
        try:
            body = _unb64(body_s)
            mac = _unb64(mac_s)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(body)
            session = Session(user_id=int(data["u"]), sid=str(data["s"]), expires=float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= now or session.sid in self._revoked:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac("csrf", session.sid.encode("ascii")))

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode("utf-8", "replace"), self.csrf_token(session).encode())

    def revoke(self, session: Session, now: float) -> None:
        while self._revoked and (len(self._revoked) >= self._max_revoked or next(iter(self._revoked.values())) <= now):
            self._revoked.popitem(last=False)
        self._revoked[session.sid] = session.expires


class LoginLimiter:
    """At most ``per_minute`` log-in attempts per login name and per client address (sliding minute).

    Memory is bounded: at most ``max_keys`` keys are tracked, the least recently used go first.
    """

    def __init__(self, per_minute: int, *, max_keys: int = 10_000, window: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_keys = max_keys

    def retry_after(self, keys: list[str], now: float) -> float | None:
        """Seconds until an attempt is allowed again, or None when allowed now."""
        worst: float | None = None
        for key in keys:
            hits = self._hits.get(key)
            if hits is None:
                continue
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = hits[0] + self.window - now
                worst = wait if worst is None else max(worst, wait)
        return worst

    def hit(self, keys: list[str], now: float) -> None:
        for key in keys:
            hits = self._hits.pop(key, None) or deque()
            hits.append(now)
            self._hits[key] = hits
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)


__all__ = [
    "COOKIE_NAME", "CSRF_HEADER", "EVERYONE", "SESSION_KEY", "SESSION_SECONDS", "SUPERVISORS", "USER_KEY", "LoginLimiter",
    "Session", "SessionCodec", "public", "roles",
]
