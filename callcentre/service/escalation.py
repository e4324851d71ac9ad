"""The promise evaluator: 80 % warnings and escalation at breach, with live wallboard alerts.

Every ``service.escalation_check_seconds`` :meth:`EscalationLoop.run_once` asks
:func:`~callcentre.domain.promises.due_escalations` at :func:`~callcentre.domain.promises.evaluation_time`
(robust to wall-clock steps), records each alert on its ticket (``warned_at`` / the ``Escalate``
transition plus a history note) and only then publishes it. The stored flag is what makes a pass
idempotent: running it twice, or after a restart, never alerts or notes twice.
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping

import structlog

from callcentre.config import Config
from callcentre.domain.lifecycle import Escalate, TicketState, TransitionRefused
from callcentre.domain.ports import Clock
from callcentre.domain.promises import AlertKind, ClockSample, PromiseAlert, due_escalations, evaluation_time
from callcentre.service.alerts import WALLBOARD
from callcentre.service.tickets import ConcurrentChange, TicketNotFound, TicketService
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger(__name__)

OVERDUE_SHOWN = 30  # rows of the wallboard's overdue list
Publish = Callable[[str, Mapping[str, Any]], Awaitable[None] | None]


class EscalationLoop:
    def __init__(self, tickets: TicketService, cfg: Config, clock: Clock, publish: Publish) -> None:
        self._tickets = tickets
        self._cfg = cfg
        self._clock = clock
        self._publish = publish
        self._previous: ClockSample | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="escalation-loop")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        # A failed pass (the database down for a moment) is logged; the next tick tries again.
        await run_periodically("escalation-loop", self.run_once, self._cfg.service.escalation_check_seconds)

    async def run_once(self) -> list[PromiseAlert]:
        """One pass; returns the alerts that were recorded and published."""
        sample = ClockSample(self._clock.now(), self._clock.monotonic())
        now = evaluation_time(self._previous, sample, self._cfg.service.clock_catch_up)
        self._previous = ClockSample(now, sample.monotonic)
        warn = self._cfg.tickets.promises.warn_fraction
        due: list[tuple[int, PromiseAlert]] = []
        late: list[TicketState] = []
        async for page in self._tickets.open_states_pages():
            ids = {st.number: tid for tid, st in page}
            states = [st for _tid, st in page]
            due.extend((ids[a.number], a) for a in due_escalations(states, now, warn))
            late = _most_overdue(late, states, now, OVERDUE_SHOWN)
        due.sort(key=lambda item: (item[1].deadline, item[1].number))
        self.overdue = _overdue_rows(late, now)
        done: list[PromiseAlert] = []
        for ticket_id, alert in due:
            try:
                recorded = await self._record(ticket_id, alert)
            except (TransitionRefused, ConcurrentChange, TicketNotFound) as exc:
                # Changed meanwhile (resolved, escalated by a person): the next pass sees the truth.
                log.info("alert skipped", ticket=alert.number, reason=str(exc))
                continue
            if recorded:
                done.append(alert)
                await self._send(alert)
        return done

    overdue: list[dict] = []  # open tickets past their promise, most overdue first (for the wallboard)

    async def _record(self, ticket_id: int, alert: PromiseAlert) -> bool:
        details = {"deadline": alert.deadline.isoformat(), "remaining_seconds": round(alert.remaining_seconds)}
        if alert.kind is AlertKind.BREACH:
            note = f"promise of {alert.deadline.isoformat()} breached: escalated to the quality department"
            await self._tickets.apply(ticket_id, Escalate("promise breached"), "escalation", note)
            log.warning("ticket escalated", ticket=alert.number, deadline=alert.deadline.isoformat())
            return True
        note = f"{round(self._cfg.tickets.promises.warn_fraction * 100)} % of the promised time used"
        return await self._tickets.note_warning(ticket_id, note, details)

    async def _send(self, alert: PromiseAlert) -> None:
        payload = {
            "type": "promise_" + alert.kind.value,
            "ticket": alert.number,
            "deadline": alert.deadline.isoformat(),
            "remaining_seconds": round(alert.remaining_seconds),
            "agent": alert.agent,
            "worker": alert.worker,
        }
        try:
            result = self._publish(WALLBOARD, payload)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
        except Exception as exc:  # the alert is on the ticket; a lost live message is only logged
            log.warning("alert not published", ticket=alert.number, error=f"{type(exc).__name__}: {exc}")


__all__ = ["WALLBOARD", "EscalationLoop", "Publish"]


def _most_overdue(kept: list[TicketState], states: list[TicketState], now: datetime, limit: int) -> list[TicketState]:
    """The ``limit`` most overdue of ``kept`` and the late ones of ``states``, most overdue first."""
    late = [st for st in states if st.promised_by is not None and st.promised_by < now]
    return heapq.nsmallest(limit, [*kept, *late], key=lambda st: (st.promised_by, st.number))


def _overdue_rows(late: list[TicketState], now: datetime) -> list[dict]:
    """Open tickets past their promise as the wallboard shows them (no owner data: number and work)."""
    return [
        {
            "number": st.number, "kind": st.kind.value, "category": st.category, "priority": st.priority.value,
            "status": st.status.value, "due": st.promised_by.isoformat(),
            "late_seconds": round((now - st.promised_by).total_seconds()),
            "department": st.department, "worker": st.worker, "escalated": st.escalated_at is not None,
        }
        for st in late
    ]
