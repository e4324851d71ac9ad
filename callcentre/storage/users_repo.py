"""Users of the desk: creation, password check, look-up, and the agents' state history.

Password hashing and verification are argon2id (slow by design), so they run in a worker thread,
never on the event loop. A log-in for an unknown login still verifies against a dummy hash, so the
answer takes the same time whether or not the login exists.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.domain.callerid import safe_display_name
from callcentre.domain.patterns import INTERFACE as INTERFACE_RE, TOKEN as _TOKEN_RE  # the same rules as the ACD's Agent
from callcentre.domain.ports import Clock, SystemClock
from callcentre.domain.users import UserExists, UserInvalid, UserRole, UserView  # the errors are raised from here
from callcentre.storage.errors import storage_errors
from callcentre.storage.users import AgentStateHistory, User
from callcentre.storage.writer import run_statement, writes_for

log = structlog.get_logger(__name__)

_LOGIN_RE = re.compile(r"^[a-z0-9_.\-]{1,64}$")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # argon2 hashes any length; bound the work a request can cause
_STATE_INSERT = insert(AgentStateHistory)  # built once, executed with each change's values


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(t for t in (text or "").split(",") if t)


def _view(u: User) -> UserView:
    return UserView(
        id=u.id,
        login=u.login,
        name=u.name,
        role=UserRole(u.role),
        active=u.active,
        interface=u.interface,
        skills=_split(u.skills),
        languages=_split(u.languages),
        senior=u.senior,
        supervisor_interface=u.supervisor_interface,
    )


def _tokens(field: str, value: Any) -> str:
    if value is None:
        return ""
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value)]
    items = [v for v in items if v]
    for v in items:
        if not _TOKEN_RE.match(v):
            raise UserInvalid(f"{field}: {v!r} must be a lower-case token (a-z, 0-9, '_', '-')")
    return ",".join(dict.fromkeys(items))


def _interface(field: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not INTERFACE_RE.match(value):
        raise UserInvalid(f"{field}: {value!r} must look like PJSIP/agent1 or Local/agent1@callcentre-agents")
    return value


async def create_user(
    session_factory: async_sessionmaker[AsyncSession],
    login: str,
    name: str,
    role: str,
    password: str,
    *,
    interface: str | None = None,
    skills: str | list[str] | None = None,
    languages: str | list[str] | None = None,
    senior: bool = False,
    supervisor_interface: str | None = None,
    active: bool = True,
    clock: Clock | None = None,
) -> UserView:
    """Validate and create a user (the CLI's ``user add``). Raises :class:`UserInvalid`/:class:`UserExists`."""
    login = (login or "").strip().lower()
    if not _LOGIN_RE.match(login):
        raise UserInvalid("login: 1-64 characters of a-z, 0-9, '.', '_' or '-'")
    clean_name = safe_display_name(name, 100)
    if not clean_name:
        raise UserInvalid("name: must not be empty")
    try:
        role_v = UserRole(role)
    except ValueError:
        raise UserInvalid(f"role: must be one of {', '.join(r.value for r in UserRole)}") from None
    if not isinstance(password, str) or not (PASSWORD_MIN <= len(password) <= PASSWORD_MAX):
        raise UserInvalid(f"password: {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    iface = _interface("interface", interface)
    if role_v is UserRole.AGENT and iface is None:
        raise UserInvalid("interface: an agent needs the dial string of their phone")
    row = User(
        login=login,
        name=clean_name,
        role=role_v.value,
        password_hash=await asyncio.to_thread(PasswordHasher().hash, password),
        active=active,
        interface=iface,
        skills=_tokens("skills", skills),
        languages=_tokens("languages", languages),
        senior=bool(senior),
        supervisor_interface=_interface("supervisor_interface", supervisor_interface),
        created_at=(clock or SystemClock()).now(),
    )
    try:
        async with storage_errors("create a user"), session_factory() as s, s.begin():
            s.add(row)
            await s.flush()
    except IntegrityError:
        raise UserExists(f"login {login!r} is already taken") from None
    log.info("user created", login=login, role=role_v.value)
    return _view(row)


class UsersRepo:
    """Look-ups for the web layer; every method is one short transaction."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], clock: Clock | None = None) -> None:
        self._sessions = session_factory
        self._writes = writes_for(session_factory)
        self._clock = clock or SystemClock()
        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash("not a password: timing equaliser")

    async def get(self, user_id: int) -> UserView | None:
        async with storage_errors("read a user"), self._sessions() as s:
            row = await s.get(User, user_id)
        return _view(row) if row is not None else None

    async def by_login(self, login: str) -> UserView | None:
        async with storage_errors("read a user"), self._sessions() as s:
            row = (await s.execute(select(User).where(User.login == login.strip().lower()))).scalar_one_or_none()
        return _view(row) if row is not None else None

    async def authenticate(self, login: str, password: str) -> UserView | None:
        """The active user whose password this is, else None (same work either way)."""
        if not isinstance(login, str) or not isinstance(password, str) or len(password) > PASSWORD_MAX:
            return None
        login = login.strip().lower()[:64]
        async with storage_errors("read a user"), self._sessions() as s:
            row = (await s.execute(select(User).where(User.login == login))).scalar_one_or_none()
        stored = row.password_hash if row is not None else self._dummy_hash

        def _verify() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

        ok = await asyncio.to_thread(_verify)
        if row is None or not ok or not row.active:
            return None
        return _view(row)

    async def agents(self) -> list[UserView]:
        async with storage_errors("read users"), self._sessions() as s:
            rows = (
                await s.execute(select(User).where(User.role == UserRole.AGENT.value, User.active.is_(True)).order_by(User.id))
            ).scalars().all()
        return [_view(r) for r in rows]

    async def record_state(
        self, agent_id: int, from_state: str | None, to_state: str, reason: str | None, at: datetime | None = None
    ) -> None:
        """Append one state change; best effort (a failure is logged: the change itself happened)."""
        at = at or self._clock.now()
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        row = {
            "agent_id": agent_id,
            "from_state": (from_state or None) and from_state[:16],
            "to_state": to_state[:16],
            "reason": (reason or None) and reason[:64],
            "at": at,
        }
        try:
            await self._writes.run(run_statement(_STATE_INSERT, row), "record an agent state")
        except Exception as exc:  # StorageUnavailable or IntegrityError: logged, never raised
            log.warning("agent state not recorded", agent_id=agent_id, error=str(exc))

    async def state_history(self, agent_id: int, limit: int = 50) -> list[dict[str, Any]]:
        q = (
            select(AgentStateHistory)
            .where(AgentStateHistory.agent_id == agent_id)
            .order_by(AgentStateHistory.at.desc(), AgentStateHistory.id.desc())
            .limit(limit)
        )
        async with storage_errors("read agent states"), self._sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            {"from_state": r.from_state, "to_state": r.to_state, "reason": r.reason, "at": r.at.isoformat()} for r in rows
        ]


async def set_password(session_factory: async_sessionmaker[AsyncSession], login: str, password: str) -> None:
    """Set a user's password (the CLI's ``user passwd``). Raises :class:`UserInvalid`."""
    if not isinstance(password, str) or not (PASSWORD_MIN <= len(password) <= PASSWORD_MAX):
        raise UserInvalid(f"password: {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    hashed = await asyncio.to_thread(PasswordHasher().hash, password)
    async with storage_errors("change a password"), session_factory() as s, s.begin():
        row = (await s.execute(select(User).where(User.login == (login or "").strip().lower()))).scalar_one_or_none()
        if row is None:
            raise UserInvalid(f"no user with login {login!r}")
        row.password_hash = hashed
    log.info("password changed", login=login)
