"""Automatic call distribution, the pure domain: agents, waiting callers, selection and the two-ring rule.

Events and a :class:`~callcentre.domain.ports.Clock` in, decisions (dataclasses) out; the adapter
(:mod:`callcentre.distribution`) turns decisions into Dial/Originate/Hangup and AMI events back into
calls on the :class:`Distributor`.

Where things are
----------------
* :mod:`.model` — the vocabulary: :class:`Agent`, :class:`WaitingCall`, :class:`Offer`, the decisions
  (:class:`MakeOffer`, :class:`CancelOffer`, :class:`Announce`, ...), the states and their
  transitions (agents: :data:`TRANSITIONS`; offers: :class:`OfferState` / :data:`OFFER_TRANSITIONS`;
  timers: :class:`TimerKind`) and :func:`classify_priority`.
* :mod:`.selection` — who gets which call: the rules in order and where a new rule goes
  (:data:`DIMENSIONS`, :data:`PREFERENCES`, :func:`agent_order`), over O(log n) indexes.
* :mod:`.distributor` — the state machine (:class:`Distributor`): agent, call and offer events,
  timers, the queue's positions and expected waits, the snapshot for the wallboard.
* :mod:`callcentre.domain.acd_metrics` — the two-ring measurement (:func:`~callcentre.domain.acd_metrics.within_rings`).
"""

from callcentre.domain.acd.distributor import DEFAULT_HANDLE_SECONDS, Distributor
from callcentre.domain.acd.model import (
    OFFER_TRANSITIONS,
    OPEN_OFFER,
    TRANSITIONS,
    AcdError,
    AcdSnapshot,
    Agent,
    AgentPaused,
    AgentState,
    AgentView,
    Announce,
    CancelOffer,
    Decision,
    DuplicateCall,
    IllegalOfferTransition,
    IllegalTransition,
    MakeOffer,
    MaxWaitReached,
    NoAgentAvailable,
    Offer,
    OfferState,
    OnlyFor,
    PauseReason,
    PriorityLevel,
    QueueEntry,
    RingOnDuty,
    StateChange,
    TargetUnavailable,
    TimerKind,
    UnknownAgent,
    UnknownCall,
    UnknownOffer,
    WaitingCall,
    WithdrawReason,
    WithdrawResult,
    business_hours_open,
    caller_display,
    classify_priority,
    offers_in,
)
from callcentre.domain.acd.selection import (
    DIMENSIONS,
    PREFERENCES,
    AgentSelector,
    MatchDimension,
    Preference,
    agent_order,
)
from callcentre.domain.acd_metrics import Alert, AlertKind, MetricsSnapshot

__all__ = [
    "DEFAULT_HANDLE_SECONDS",
    "DIMENSIONS",
    "OFFER_TRANSITIONS",
    "OPEN_OFFER",
    "PREFERENCES",
    "TRANSITIONS",
    "AcdError",
    "AcdSnapshot",
    "Agent",
    "AgentPaused",
    "AgentSelector",
    "AgentState",
    "AgentView",
    "Alert",
    "AlertKind",
    "Announce",
    "CancelOffer",
    "Decision",
    "Distributor",
    "DuplicateCall",
    "IllegalOfferTransition",
    "IllegalTransition",
    "MakeOffer",
    "MatchDimension",
    "MaxWaitReached",
    "MetricsSnapshot",
    "NoAgentAvailable",
    "Offer",
    "OfferState",
    "OnlyFor",
    "PauseReason",
    "Preference",
    "PriorityLevel",
    "QueueEntry",
    "RingOnDuty",
    "StateChange",
    "TargetUnavailable",
    "TimerKind",
    "UnknownAgent",
    "UnknownCall",
    "UnknownOffer",
    "WaitingCall",
    "WithdrawReason",
    "WithdrawResult",
    "agent_order",
    "business_hours_open",
    "caller_display",
    "classify_priority",
    "offers_in",
]
