"""Transfers of a call our distribution put through: blind, and attended ("consult, then complete").

Pure: the :class:`Transfer` record and its states, with transitions named after the events that cause
them (as Wazo's ``plugins/transfers/state.py``), one log line each carrying the caller's uniqueid.
The adapter (:mod:`callcentre.distribution.transfers`) sends the AMI actions and runs the FastAGI
scripts; this module only says what may happen next.

How a transfer goes (seen on the real Asterisk 20, docs/transfers.md):

* **blind**: the caller's channel is redirected into our ``transfer`` script (a new FastAGI session,
  same uniqueid), which queues the caller for the target under the two-ring rule:
  ``requested -> moving -> ringing -> completed`` (the target answered), or ``fell_back`` (nobody of
  the target took it: ``transfers.no_answer`` decides where the caller goes);
* **attended**: the caller (to our ``transfer`` script, on hold) and the first agent's leg (to our
  ``consult`` script, which rings the target) are redirected together; the target answers and talks
  to the first agent (``consulting``); *complete* bridges the caller to the target (``completed``),
  *cancel* or a target who does not answer bridges the caller back to the first agent
  (``returned``). A first agent who hangs up while consulting leaves a blind transfer behind.

Any open transfer ends ``abandoned`` when the caller hangs up, ``failed`` when it cannot start or is
lost (the Redirect refused, a session that never came).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from callcentre.domain.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable

log = structlog.get_logger("callcentre.transfers")


class TransferRefused(Conflict):
    """Not possible now (the call is not connected to an agent, a transfer is already in progress,
    the target cannot take calls, nothing to complete...); the message says which."""

    code = "transfer_refused"


class TransferForbidden(Forbidden):
    """Only the agent on the call (or a supervisor) may transfer it."""

    code = "transfer_forbidden"


class UnknownCall(NotFound):
    """No call with that uniqueid is connected to an agent by this server."""

    code = "unknown_call"


class InvalidTarget(Invalid):
    """The target named does not exist or takes no transfers."""

    code = "invalid_target"


class TransfersUnavailable(Unavailable):
    """Transfers are switched off, call distribution is not running, or the AMI link is down."""

    code = "transfers_unavailable"


class TransferKind(str, enum.Enum):
    BLIND = "blind"
    ATTENDED = "attended"


class TargetKind(str, enum.Enum):
    AGENT = "agent"
    SKILL = "skill"
    DEPARTMENT = "department"


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Where the caller goes: an agent (by agent id), a skill group (by skill), or a department (by its
    code; its phones, or its skill group). ``name`` is for people (the screen-pop, the history)."""

    kind: TargetKind
    code: str
    name: str

    def describe(self) -> str:
        return f"{self.kind.value}:{self.code}"


class TransferControl(Protocol):
    """What the desk asks of call distribution about transfers (the ACD adapter implements it).

    ``target`` is ``{"agent": <agent id>}``, ``{"skill": <code>}`` or ``{"department": <code>}``, checked
    by the adapter against what it knows; the actor is the logged-in user (their agent id is their
    users.id). Refusals are the errors above."""

    async def transfer(self, uniqueid: str, kind: str, target: dict[str, str], *, actor_agent_id: str,
                       actor_login: str, supervisor: bool) -> dict[str, Any]: ...

    async def transfer_complete(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]: ...

    async def transfer_cancel(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]: ...

    def transfer_targets(self) -> dict[str, Any]: ...


class TransferState(str, enum.Enum):
    REQUESTED = "requested"  # checked, token made; the Redirect is about to be sent
    MOVING = "moving"  # Redirect sent: the caller (and the first agent, attended) are moving to our scripts
    RINGING = "ringing"  # the target is being offered the call under the two-ring rule
    CONSULTING = "consulting"  # attended: the target answered and talks to the first agent; the caller holds
    COMPLETED = "completed"  # the caller is with the target
    RETURNED = "returned"  # attended: the caller is back with the first agent (cancelled, or not answered)
    FELL_BACK = "fell_back"  # blind: nobody of the target took it; the configured fallback took over
    ABANDONED = "abandoned"  # the caller hung up during the transfer
    FAILED = "failed"  # it could not start, or was lost

    @property
    def is_open(self) -> bool:
        return self in OPEN_TRANSFER


OPEN_TRANSFER = frozenset({TransferState.REQUESTED, TransferState.MOVING, TransferState.RINGING,
                           TransferState.CONSULTING})
_T = TransferState
_OPEN = tuple(OPEN_TRANSFER)
# event -> {from state: to state}; anything else is refused with IllegalTransferTransition.
TRANSFER_TRANSITIONS: dict[str, dict[TransferState, TransferState]] = {
    "redirect_sent": {_T.REQUESTED: _T.MOVING},
    "redirect_refused": {_T.REQUESTED: _T.FAILED},
    "target_offered": {_T.MOVING: _T.RINGING, _T.RINGING: _T.RINGING},
    "target_answered": {_T.RINGING: _T.COMPLETED},  # blind
    "consult_answered": {_T.RINGING: _T.CONSULTING},  # attended
    "completed": {_T.CONSULTING: _T.COMPLETED},  # attended: the caller bridged to the target
    "cancelled": {_T.MOVING: _T.RETURNED, _T.RINGING: _T.RETURNED, _T.CONSULTING: _T.RETURNED},
    "not_answered": {_T.RINGING: _T.RETURNED},  # attended: back to the first agent
    "fell_back": {_T.MOVING: _T.FELL_BACK, _T.RINGING: _T.FELL_BACK},  # blind
    "first_agent_left": {_T.MOVING: _T.RINGING, _T.RINGING: _T.RINGING, _T.CONSULTING: _T.RINGING},
    "caller_hung_up": {s: _T.ABANDONED for s in _OPEN},
    "lost": {s: _T.FAILED for s in _OPEN},
}


class IllegalTransferTransition(RuntimeError):
    def __init__(self, uniqueid: str, event: str, state: TransferState) -> None:
        super().__init__(f"transfer of {uniqueid}: cannot {event} while {state.value}")
        self.event = event
        self.state = state


@dataclass(eq=False)
class Transfer:
    """One transfer of one call. ``seq`` counts the call's transfers (1, 2, ...): offers made for it
    are named ``<uniqueid>#x<seq>-<n>``, so they never clash with the call's earlier offers."""

    uniqueid: str  # the caller's channel: unchanged by the Redirect
    seq: int
    kind: TransferKind
    target: TransferTarget
    from_agent_id: str
    from_agent_name: str
    token: str  # digits: the extension the caller is redirected to
    created_at: datetime
    by: str  # who asked (a login), for the history
    caller_channel: str
    agent_channel: str | None = None  # the first agent's leg (attended: redirected to the consult script)
    consult_token: str | None = None
    state: TransferState = TransferState.REQUESTED
    to_agent_id: str | None = None  # who took it
    to_agent_name: str | None = None
    to_channel: str | None = None  # attended: the target's leg, bridged to the caller on complete
    first_offer_id: str | None = None  # the offer the first agent answered
    consult_offer_id: str | None = None  # attended: the offer the target answered
    consult_uniqueid: str | None = None  # attended: the first agent's leg running the consult script
    outcome: str = ""  # why it ended (for the history): not_staffed, missed, timeout, cancelled ...
    history: list[tuple[str, str, datetime]] = field(default_factory=list)  # (event, state, when)

    def __post_init__(self) -> None:
        self.log = log.bind(uniqueid=self.uniqueid, transfer=self.seq, kind=self.kind.value,
                            target=self.target.describe())

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    @property
    def offer_prefix(self) -> str:
        return f"x{self.seq}-"

    def can(self, event: str) -> bool:
        return self.state in TRANSFER_TRANSITIONS[event]

    def go(self, event: str, at: datetime, **fields: Any) -> None:
        """One transition (TRANSFER_TRANSITIONS), logged with the caller's uniqueid."""
        frm = self.state
        to = TRANSFER_TRANSITIONS[event].get(frm)
        if to is None:
            raise IllegalTransferTransition(self.uniqueid, event, frm)
        self.state = to
        self.history.append((event, to.value, at))
        if event == "first_agent_left":
            self.kind = TransferKind.BLIND
        self.log.info("transfer state changed", transition=event, from_state=frm.value, to_state=to.value, **fields)

    def to_dict(self) -> dict[str, Any]:
        """For the wallboard, the agent desk and the API: ids and names, never channels or tokens."""
        return {
            "uniqueid": self.uniqueid,
            "seq": self.seq,
            "kind": self.kind.value,
            "state": self.state.value,
            "target": {"kind": self.target.kind.value, "code": self.target.code, "name": self.target.name},
            "from_agent_id": self.from_agent_id,
            "from_agent_name": self.from_agent_name,
            "to_agent_id": self.to_agent_id,
            "to_agent_name": self.to_agent_name,
            "created_at": self.created_at.isoformat(),
            "outcome": self.outcome or None,
        }

    def history_entry(self) -> dict[str, Any]:
        """What the call's and its tickets' history keep: from, to, kind, when, and how it ended."""
        return {
            "uniqueid": self.uniqueid,
            "kind": self.kind.value,
            "from": self.from_agent_name,
            "from_agent_id": self.from_agent_id,
            "to": self.to_agent_name or self.target.name,
            "target": self.target.describe(),
            "to_agent_id": self.to_agent_id,
            "state": self.state.value,
            "outcome": self.outcome or None,
            "requested_at": self.created_at.isoformat(),
            "ended_at": self.history[-1][2].isoformat() if self.history else None,
            "by": self.by,
        }


__all__ = [
    "OPEN_TRANSFER",
    "TRANSFER_TRANSITIONS",
    "IllegalTransferTransition",
    "InvalidTarget",
    "TargetKind",
    "Transfer",
    "TransferControl",
    "TransferForbidden",
    "TransferKind",
    "TransferRefused",
    "TransferState",
    "TransferTarget",
    "TransfersUnavailable",
    "UnknownCall",
]
