"""Log-in and who is asking: the desk users' accounts as the session feature needs them."""

from __future__ import annotations

from callcentre.domain.users import UserView
from callcentre.storage.users_repo import UsersRepo


class AccountService:
    def __init__(self, users: UsersRepo) -> None:
        self._users = users

    async def authenticate(self, login: str, password: str) -> UserView | None:
        """The active user whose password this is, else None (the same work either way)."""
        return await self._users.authenticate(login, password)

    async def active_user(self, user_id: int) -> UserView | None:
        """The user a session belongs to, or None when they no longer exist or were deactivated."""
        user = await self._users.get(user_id)
        return user if user is not None and user.active else None


__all__ = ["AccountService"]
