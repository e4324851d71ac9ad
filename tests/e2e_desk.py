"""Log in at the agent desk of a running test stack (see tests/conftest.py ``stack``)."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator


@contextlib.asynccontextmanager
async def agent_session(stack, login: str, password: str = "desk-password-1") -> AsyncIterator[tuple[object, dict]]:
    """An agent created in the users table, logged in: yields the HTTP client and the CSRF/Origin headers."""
    from callcentre.storage.users_repo import create_user

    if await stack.services.users.by_login(login) is None:
        await create_user(stack.services.session_factory, login, login.title(), "agent", password, interface=f"PJSIP/{login}")
    async with stack.http() as c:
        r = await c.post("/api/login", json={"login": login, "password": password})
        assert r.status == 200, await r.text()
        yield c, {"X-CSRF-Token": (await r.json())["csrf"], "Origin": stack.url}
