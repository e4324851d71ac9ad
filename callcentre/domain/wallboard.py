"""The supervisor wallboard's live picture, typed: queue, agents, headline figures, alerts, overdue work.

:func:`wallboard_snapshot` builds it from the distributor's :class:`~callcentre.domain.acd.AcdSnapshot`
and what the IVR learnt about each waiting caller; :meth:`WallboardSnapshot.to_dict` is the JSON the
web layer sends (``GET /api/queue``, the ``snapshot`` frames of ``/ws/wallboard``) and
``callcentre/web/static/wallboard.js`` renders.

A new wallboard figure: a field of :class:`Figures`, its value in :func:`wallboard_snapshot` (most come
from today's :class:`~callcentre.domain.acd_metrics.MetricsSnapshot`), and its tile in ``wallboard.js``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Mapping, Sequence

from callcentre.domain.acd import AcdSnapshot, AgentState
from callcentre.domain.calls import CallInfo


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One waiting caller (or call-back request), in queue order."""

    call_id: str
    caller: str | None
    priority: str  # normal / vip / repeat / emergency
    position: int
    wait_seconds: float
    entered_at: str  # ISO 8601
    callback: bool
    ivr_choice: str  # the skill asked for, or "agent"
    language: str | None
    ringing_agent_id: str | None
    owner_name: str | None
    unit: str | None  # "building-unit"
    transfer_target: str | None = None  # a transferred call waiting for its target ("agent:7", "skill:fees")

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class AgentItem:
    agent_id: str  # the users.id, as text
    name: str
    state: str  # AgentState value
    reason: str | None  # the pause reason
    since: float  # epoch seconds the state began
    current_call_id: str | None
    current_caller: str | None
    busy_elsewhere: bool
    answered_today: int
    missed_today: int
    offers_today: int
    two_ring_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Figures:
    """The headline figures (today, centre time); ``today`` is every measured figure of the day."""

    two_ring_share_today: float | None
    offer_two_ring_share_today: float | None
    avg_wait: float | None
    p90_wait: float | None
    longest_wait: float | None
    abandon_rate: float | None
    waiting: int
    agents_ready: int
    target_wait_seconds: float
    today: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class WallboardSnapshot:
    at: str  # ISO 8601
    queue: tuple[QueueItem, ...]
    agents: tuple[AgentItem, ...]
    figures: Figures
    alerts: tuple[Mapping[str, Any], ...]  # recent alerts, for a wallboard that (re)connects
    overdue: tuple[Mapping[str, Any], ...]  # open tickets past their promise
    transfers: tuple[Mapping[str, Any], ...] = ()  # transfers in progress, then the last few that ended

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "queue": [q.to_dict() for q in self.queue],
            "agents": [a.to_dict() for a in self.agents],
            "figures": self.figures.to_dict(),
            "alerts": list(self.alerts),
            "overdue": list(self.overdue),
            "transfers": list(self.transfers),
        }


def wallboard_snapshot(
    snap: AcdSnapshot,
    *,
    waiting: Mapping[str, CallInfo],
    callbacks: Mapping[str, CallInfo],
    alerts: Sequence[Mapping[str, Any]],
    overdue: Sequence[Mapping[str, Any]],
    target_wait_seconds: float,
    transfers: Sequence[Mapping[str, Any]] = (),
) -> WallboardSnapshot:
    """``waiting``: callers in the queue by call id (what the IVR learnt); ``callbacks``: call-back
    requests whose caller has hung up; both name the owner on the queue's rows."""
    now_wall = snap.at
    queue = []
    for q in snap.queue:
        call = waiting.get(q.call_id) or callbacks.get(q.call_id)
        owner = call.owner if call else None
        queue.append(QueueItem(
            call_id=q.call_id, caller=q.caller_id, priority=q.priority, position=q.position,
            wait_seconds=round(q.waited_seconds, 1),
            entered_at=(now_wall - timedelta(seconds=q.waited_seconds)).isoformat(),
            callback=q.callback, ivr_choice=q.required_skill or "agent", language=q.language,
            ringing_agent_id=q.ringing_agent_id,
            owner_name=owner.owner_name if owner else None,
            unit=f"{owner.building}-{owner.unit}" if owner else None,
            transfer_target=q.target,
        ))
    callers = {q.call_id: q.caller for q in queue}

    def caller_of(call_id: str | None) -> str | None:
        if not call_id:
            return None
        if callers.get(call_id):
            return callers[call_id]
        w = waiting.get(call_id)
        return w.caller_id if w else None

    agents = tuple(
        AgentItem(
            agent_id=a.agent_id, name=a.name, state=a.state.value,
            reason=a.pause_reason.value if a.pause_reason else None,
            since=(now_wall - timedelta(seconds=a.seconds_in_state)).timestamp(),
            current_call_id=a.current_call_id, current_caller=caller_of(a.current_call_id),
            busy_elsewhere=a.busy_elsewhere, answered_today=a.answered_today, missed_today=a.missed_today,
            offers_today=a.offers_today, two_ring_share=a.two_ring_share,
        )
        for a in snap.agents
    )
    m = snap.metrics.to_dict()
    figures = Figures(
        two_ring_share_today=m.get("call_two_ring_share"),
        offer_two_ring_share_today=m.get("offer_two_ring_share"),
        avg_wait=m.get("avg_speed_of_answer"),
        p90_wait=m.get("p90_speed_of_answer"),
        longest_wait=m.get("longest_current_wait"),
        abandon_rate=m.get("abandon_rate"),
        waiting=len(queue),
        agents_ready=sum(1 for a in agents if a.state == AgentState.READY.value),
        target_wait_seconds=target_wait_seconds,
        today=m,
    )
    return WallboardSnapshot(now_wall.isoformat(), tuple(queue), agents, figures, tuple(alerts), tuple(overdue),
                             tuple(transfers))


__all__ = ["AgentItem", "Figures", "QueueItem", "WallboardSnapshot", "wallboard_snapshot"]
