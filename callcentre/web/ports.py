"""What the web layer needs from call distribution (implemented by the ACD adapter; faked in tests).

The browser only ever picks an agent and one of these fixed actions or modes; the adapter turns
them into AMI actions (ChanSpy with ``q``/``w``/``B`` originated to the supervisor's own phone), so
nothing a browser sends becomes an application name or its data.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, runtime_checkable


class AgentAction(str, enum.Enum):
    LOGIN = "login"
    READY = "ready"
    PAUSE = "pause"
    END_WRAPUP = "end_wrapup"
    LOGOUT = "logout"


class SuperviseMode(str, enum.Enum):
    LISTEN = "listen"  # ChanSpy option q
    WHISPER = "whisper"  # ChanSpy option w
    BARGE = "barge"  # ChanSpy option B


@runtime_checkable
class ACDControl(Protocol):
    def snapshot(self) -> dict[str, Any]:
        """JSON-able: {"queue": [...], "agents": [...], "figures": {...}, "alerts": [...]}.

        queue items: call_id, caller, owner_name, unit, ivr_choice, priority, entered_at, wait_seconds;
        agents: agent_id (the users.id), name, state, since, reason, current_caller, answered_today,
        missed_today, two_ring_share; figures: two_ring_share_today, avg_wait, longest_wait,
        abandon_rate, waiting, agents_ready.
        """

    async def agent_action(self, agent_id: int, action: str, reason: str | None) -> None:
        """Change an agent's state; raises ValueError when the change is illegal in the current state."""

    async def supervise(self, supervisor_id: int, agent_id: int, mode: str) -> None:
        """Originate ChanSpy on the agent's call to the supervisor's phone; ValueError if impossible."""
