"""Owners at the desk: the owner card (screen-pop), search, and tying a new number to an owner."""

from __future__ import annotations

from typing import Any

import structlog

from callcentre.domain.users import UserView
from callcentre.storage.desk_repo import DeskRepo

log = structlog.get_logger(__name__)


class OwnerService:
    """Also what the screen-pop reads (``lookup_by_phone`` and ``owner_card``), from the same desk repository."""

    def __init__(self, desk: DeskRepo) -> None:
        self._desk = desk

    async def lookup_by_phone(self, phone: str | None, *, exclude_uniqueid: str | None = None) -> dict[str, Any]:
        """Everything known about a normalised number: owners with units, tickets, calls, repeat flag."""
        return await self._desk.lookup_by_phone(phone, exclude_uniqueid=exclude_uniqueid)

    async def owner_card(self, owner_id: int) -> dict[str, Any]:
        return await self._desk.owner_card(owner_id)

    async def search(self, text: str, *, phone: str | None) -> list[dict[str, Any]]:
        """By (part of) name, by unit ("3-802", "802") or by number (normalised, or trailing digits)."""
        return await self._desk.search_owners(text, phone=phone)

    async def attach_phone(self, actor: UserView, owner_id: int, number: str, raw: str, *,
                           unit_id: int | None) -> dict[str, Any]:
        """Tie a number to an owner (and optionally one of their units) so the next call is recognised."""
        result = await self._desk.attach_phone(owner_id, number, raw, unit_id=unit_id)
        log.info("phone attached at the desk", owner_id=owner_id, by=actor.login)
        return result


__all__ = ["OwnerService"]
