"""The main menu's actions, and what each one makes (one definition, used by the IVR and the reports).

``config.yaml`` maps digits to these actions by name (``ivr.menu``: ``{"2": repair, ...}``); the
configuration validates the names and the IVR turns them into :class:`MenuAction` at once.

A new IVR branch is a new member here with its :class:`Branch` row (what it makes) and a handler in
:meth:`callcentre.domain.ivr.HotlineIVR._main_menu` (how it talks to the caller), plus its prompt
``menu-<name>`` in ``prompts/catalogue.yaml``. The configuration validates ``ivr.menu`` against this enum.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callcentre.domain.model import Priority, TicketKind


@dataclass(frozen=True, slots=True)
class Branch:
    """What choosing one action makes."""

    # The ticket the branch must end in (the daily reconciliation lists calls that chose it and have none).
    ticket_kind: TicketKind | None = None
    # The ticket's priority when the branch fixes it (an emergency is always major).
    priority: Priority | None = None
    # The agent skill asked for when the branch hands the caller to a person before a category is chosen.
    skill: str | None = None
    # Straight to an agent ahead of everyone waiting.
    emergency: bool = False
    # The menu plays again afterwards (the branch is a detour, not the end of the call).
    back_to_menu: bool = False
    # False for a key that only changes how the menu is heard (language, repeat): the caller's real
    # choice comes after it.
    is_choice: bool = True


class MenuAction(str, enum.Enum):
    SELF_SERVICE = "self_service"
    REPAIR = "repair"
    COMPLAINT = "complaint"
    AGENT = "agent"
    EMERGENCY = "emergency"
    ENGLISH = "english"
    REPEAT = "repeat"

    @property
    def branch(self) -> Branch:
        return BRANCHES[self]

    @property
    def ticket_kind(self) -> TicketKind | None:
        return BRANCHES[self].ticket_kind

    @property
    def skill(self) -> str | None:
        return BRANCHES[self].skill

    @property
    def prompt(self) -> str:
        """The menu's prompt for this option (``menu-self-service``)."""
        return "menu-" + self.value.replace("_", "-")


BRANCHES: dict[MenuAction, Branch] = {
    MenuAction.SELF_SERVICE: Branch(back_to_menu=True),
    MenuAction.REPAIR: Branch(ticket_kind=TicketKind.REPAIR, skill="repair"),
    MenuAction.COMPLAINT: Branch(ticket_kind=TicketKind.COMPLAINT, skill="complaint"),
    MenuAction.AGENT: Branch(),
    MenuAction.EMERGENCY: Branch(ticket_kind=TicketKind.EMERGENCY, priority=Priority.MAJOR, emergency=True),
    MenuAction.ENGLISH: Branch(back_to_menu=True, is_choice=False),
    MenuAction.REPEAT: Branch(back_to_menu=True, is_choice=False),
}

TICKET_ACTIONS = frozenset(a for a in MenuAction if a.ticket_kind is not None)
"""Actions that must end in a ticket (a repair, a complaint, an emergency)."""
PASS_THROUGH = frozenset(a for a in MenuAction if not a.branch.is_choice)
"""Actions that lead back to the same menu without being the caller's choice."""


def menu_action(name: str) -> MenuAction:
    """The action a configured name stands for; ValueError names the unknown one."""
    try:
        return MenuAction(name)
    except ValueError:
        raise ValueError(f"unknown menu action {name!r} (known: {', '.join(a.value for a in MenuAction)})") from None


__all__ = ["BRANCHES", "Branch", "MenuAction", "PASS_THROUGH", "TICKET_ACTIONS", "menu_action"]
