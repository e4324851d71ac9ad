"""The agent's screen-pop card, defined once: the basic card (what the IVR learnt) and the full card
(the same plus the owner record from the database).

Call distribution publishes the basic card the moment it decides to ring an agent (before the Dial is
written) and the full card a few milliseconds later, in a second message with the same shape; the
agent page renders both the same way. Text the caller controls (the caller ID as received, the
display name) is made safe for display here.
"""

from __future__ import annotations

from typing import Any, Protocol

from callcentre.domain.callerid import safe_display_name
from callcentre.domain.calls import CallInfo


class OwnerLookup(Protocol):
    """The owner record behind a number (implemented by ``callcentre.storage.desk_repo.DeskRepo``).

    ``owner_card(owner_id)`` (optional; raises LookupError) adds an owner the caller was identified
    as in the IVR whose number is not on file."""

    async def lookup_by_phone(self, phone: str | None, *, exclude_uniqueid: str | None = None) -> dict[str, Any]: ...


def basic_card(call: CallInfo) -> dict[str, Any]:
    """What the IVR learnt; the database parts are empty until the full card follows."""
    owner = call.owner
    return {
        "uniqueid": call.uniqueid,
        "linkedid": call.linkedid,
        "caller_id": call.caller_id,
        "caller_id_raw": safe_display_name(call.caller_id_raw or "", 64),
        "caller_name": safe_display_name(call.caller_name or "", 64),
        "language": call.language,
        "hotline": call.hotline.card() if call.hotline is not None else None,  # which estate's number they dialled
        "ivr_path": list(call.path),
        "ivr_tickets": list(call.tickets),
        "identified": {"owner_id": owner.owner_id, "unit_id": owner.unit_id, "building": owner.building,
                       "unit": owner.unit} if owner else None,
        "owners": [],
        "last_calls": [],
        "repeat_caller": False,
        "unowned_tickets": [],
    }


async def full_card(desk: OwnerLookup, call: CallInfo) -> dict[str, Any]:
    """The basic card with the owner card from the database (raises StorageUnavailable)."""
    found = await desk.lookup_by_phone(call.caller_id, exclude_uniqueid=call.uniqueid)
    owner = call.owner
    known_ids = {c["owner_id"] for c in found["owners"]}
    missing = [m.owner_id for m in ([owner] if owner else []) + list(call.matches) if m.owner_id not in known_ids]
    owner_card = getattr(desk, "owner_card", None)
    if missing and owner_card is not None:
        # The caller keyed in a unit in the IVR (number not on file): show that owner too.
        for oid in dict.fromkeys(missing):
            try:
                found["owners"].append(await owner_card(oid))
            except LookupError:
                continue
    return {
        **basic_card(call),
        "owners": found["owners"],
        "last_calls": found["last_calls"],
        "repeat_caller": found["repeat_caller"],
        "unowned_tickets": found["unowned_tickets"],
    }


__all__ = ["OwnerLookup", "basic_card", "full_card"]
