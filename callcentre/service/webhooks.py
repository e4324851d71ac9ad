"""Dispatch out: signed JSON webhooks from a persisted outbox (issue 5, "dispatch out").

Assigning a worker writes one ``webhook_outbox`` row per configured URL *in the same transaction* as
the dispatch, so a dispatch is never without its notification and a restart loses nothing pending.
:class:`WebhookSender` posts due rows, records every attempt (status code or error) in
``webhook_attempts``, and retries with exponential backoff until ``max_attempts``, after which the
row is ``gave_up`` and stays visible.

Signature: ``X-Callcentre-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` with
``X-Callcentre-Timestamp: <unix seconds>``; receivers should reject old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config, ConfigError
from callcentre.domain.lifecycle import TicketState
from callcentre.domain.ports import Clock
from callcentre.storage.models import TicketRow
from callcentre.storage.service_models import OutboxState, WebhookAttempt, WebhookOutbox
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger(__name__)

SECRET_ENV = "CALLCENTRE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Callcentre-Signature"
TIMESTAMP_HEADER = "X-Callcentre-Timestamp"
_ERROR_MAX = 300


@dataclass(frozen=True)
class WebhookSettings:
    """Proposed ``webhooks`` config section (see the module docstring for the signature)."""

    urls: Sequence[str] = ()
    secret: bytes = field(default=b"", repr=False)
    timeout_seconds: float = 10.0
    # Backoff: first retry after base, doubling, capped at max; then give up after max_attempts.
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 8
    poll_seconds: float = 5.0
    batch: int = 50

    def __post_init__(self) -> None:
        for url in self.urls:
            check_url(url)
        if self.urls and not self.secret:
            raise ConfigError(f"webhooks: a secret is needed ({SECRET_ENV} or webhooks.secret_file)")
        if self.timeout_seconds <= 0 or self.retry_base_seconds <= 0 or self.max_attempts < 1:
            raise ConfigError("webhooks: timeout_seconds and retry_base_seconds must be > 0, max_attempts >= 1")

    def delay_after(self, attempts: int) -> timedelta:
        """Wait after the ``attempts``-th failed try: base · 2^(attempts-1), capped."""
        seconds = min(self.retry_base_seconds * (2 ** max(0, attempts - 1)), self.retry_max_seconds)
        return timedelta(seconds=seconds)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhooks: {url!r} is not an http(s) URL")
    return url


def load_secret(environ: Mapping[str, str] | None = None, secret_file: Path | None = None) -> bytes:
    """The signing secret from CALLCENTRE_WEBHOOK_SECRET, else the file (never from the YAML)."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV, "")
    if value:
        return value.encode()
    if secret_file is not None:
        try:
            return secret_file.read_text(encoding="utf-8").strip().encode()
        except OSError as exc:
            raise ConfigError(f"webhooks.secret_file: cannot read {secret_file}: {exc.strerror}") from exc
    return b""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers and tests: constant-time check of a signature header."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def ticket_payload(event: str, row: TicketRow, state: TicketState, cfg: Config, at: datetime) -> dict[str, Any]:
    """What a property's SMS / WeChat Work bridge needs to send the worker out."""
    phone = None
    for d in cfg.service.departments:
        for w in d.workers:
            if w.id == state.worker:
                phone = w.phone
    return {
        "event": event,
        "at": at.isoformat(),
        "ticket": {
            "number": row.number, "kind": row.kind, "category": row.category, "priority": state.priority.value,
            "status": state.status.value, "description": row.description, "unit_id": row.unit_id,
            "promised_by": state.promised_by.isoformat() if state.promised_by else None,
        },
        "department": state.department,
        "worker": {"id": state.worker, "phone": phone},
    }


def enqueue(
    s: AsyncSession, ticket_id: int | None, event: str, payload: Mapping[str, Any], urls: Sequence[str], now: datetime
) -> None:
    """Add one outbox row per URL inside the caller's transaction."""
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    for url in urls:
        s.add(
            WebhookOutbox(
                ticket_id=ticket_id, event=event[:32], url=url, payload=body, state=OutboxState.PENDING.value,
                attempts=0, next_at=now, created_at=now,
            )
        )


class WebhookSender:
    """Delivers the outbox. Owns one background task (start/stop) and, unless given one, one
    aiohttp.ClientSession."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: WebhookSettings,
        clock: Clock,
        http: aiohttp.ClientSession | None = None,
        fence: Callable[[AsyncSession], Awaitable[bool]] | None = None,
    ) -> None:
        """``fence(session)``: asked in a transaction before each POST; False (this node is no longer
        the cluster's leader) leaves the delivery to the leader."""
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._http = http
        self._own_http = http is None
        self._fence = fence
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    def wake(self) -> None:
        """A row was just queued: deliver now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        await run_periodically("webhook-sender", self.deliver_due, self._settings.poll_seconds, wake=self._wake)

    async def deliver_due(self) -> int:
        """Try every due row once; returns how many were delivered."""
        now = self._clock.now()
        q = (
            select(WebhookOutbox.id)
            .where(WebhookOutbox.state == OutboxState.PENDING.value, WebhookOutbox.next_at <= now)
            .order_by(WebhookOutbox.next_at, WebhookOutbox.id)
            .limit(self._settings.batch)
        )
        async with self._sessions() as s:
            ids = list((await s.execute(q)).scalars())
        delivered = 0
        for outbox_id in ids:
            delivered += await self._deliver_one(outbox_id)
        return delivered

    async def _post(self, url: str, body: bytes, event: str, delivery: int) -> tuple[int | None, str | None]:
        if self._http is None:
            raise RuntimeError("WebhookSender.start() was not called")
        ts = int(self._clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "callcentre-webhook/1",
            "X-Callcentre-Event": event,
            "X-Callcentre-Delivery": str(delivery),
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self._settings.secret, ts, body),
        }
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_seconds)
        try:
            async with self._http.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status, None
                return resp.status, f"HTTP {resp.status} {resp.reason or ''}".strip()
        except asyncio.TimeoutError:
            return None, f"timed out after {self._settings.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:_ERROR_MAX]

    async def _deliver_one(self, outbox_id: int) -> int:
        async with self._sessions() as s:
            row = await s.get(WebhookOutbox, outbox_id)
        if row is None or row.state != OutboxState.PENDING.value:
            return 0
        if self._fence is not None:
            async with self._sessions() as s, s.begin():
                if not await self._fence(s):
                    return 0
        started = time.monotonic()
        status, error = await self._post(row.url, row.payload.encode(), row.event, row.id)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        now = self._clock.now()
        attempts = row.attempts + 1
        async with self._sessions() as s, s.begin():
            fresh = await s.get(WebhookOutbox, outbox_id)
            if fresh is None:
                return 0
            s.add(
                WebhookAttempt(
                    outbox_id=outbox_id, attempt_no=attempts, at=now, status_code=status,
                    error=error[:_ERROR_MAX] if error else None, duration_ms=elapsed_ms,
                )
            )
            fresh.attempts = attempts
            if error is None:
                fresh.state = OutboxState.DELIVERED.value
                fresh.delivered_at = now
                fresh.last_error = None
            else:
                fresh.last_error = error[:_ERROR_MAX]
                if attempts >= self._settings.max_attempts:
                    fresh.state = OutboxState.GAVE_UP.value
                else:
                    fresh.next_at = now + self._settings.delay_after(attempts)
        blog = log.bind(outbox_id=outbox_id, url=row.url, attempt=attempts, ticket_id=row.ticket_id)
        if error is None:
            blog.info("webhook delivered", status=status)
            return 1
        if attempts >= self._settings.max_attempts:
            blog.error("webhook given up", error=error)
        else:
            blog.warning("webhook failed", error=error)
        return 0


async def outbox_status(sessions: async_sessionmaker[AsyncSession], ticket_id: int) -> list[dict[str, Any]]:
    """The ticket's deliveries and their attempts, for the desk ("failures visible")."""
    async with sessions() as s:
        rows = (
            await s.execute(select(WebhookOutbox).where(WebhookOutbox.ticket_id == ticket_id).order_by(WebhookOutbox.id))
        ).scalars().all()
        out = []
        for r in rows:
            tries = (
                await s.execute(
                    select(WebhookAttempt).where(WebhookAttempt.outbox_id == r.id).order_by(WebhookAttempt.attempt_no)
                )
            ).scalars().all()
            out.append(
                {
                    "id": r.id, "event": r.event, "url": r.url, "state": r.state, "attempts": r.attempts,
                    "last_error": r.last_error, "next_at": r.next_at, "delivered_at": r.delivered_at,
                    "tries": [{"at": t.at, "status": t.status_code, "error": t.error} for t in tries],
                }
            )
    return out


__all__ = [
    "SECRET_ENV", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookSender", "WebhookSettings", "check_url",
    "enqueue", "load_secret", "outbox_status", "sign", "ticket_payload", "verify",
]
