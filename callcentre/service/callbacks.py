"""The closing call-back (关闭反馈 / 回访): call the owner once a ticket is resolved.

Resolving a ticket schedules attempt 1 (:meth:`TicketService.apply` writes it in the same
transaction). :class:`CallbackScheduler` then:

1. places due attempts with an Async Originate to ``dial_template`` (``Local/<number>@<context>`` by
   default) into ``callcentre-callback,survey,1`` with ``TICKET=<number>`` and ``CC_CALLBACK=<attempt
   id>``. The attempt is marked ``dialling``, with the Originate's ActionID (``callcentre-callback-<attempt
   id>``: unique across restarts and servers sharing a database), and committed *before* the Originate
   is sent, so a crash can never ring the owner twice for one attempt;
2. matches the ``OriginateResponse`` by that ActionID (Reason 4 answered, 3 no answer, 5 busy, 0 failed;
   see ``ami-originate-outcomes.txt``). The response may come in right behind the Originate's own reply,
   before the Originate call has returned here; it matches all the same, as the ActionID is already
   stored;
3. on anything but an answer, schedules the next try with :func:`~callcentre.domain.service.next_attempt`
   (within calling hours) or, when the policy gives up, flags the ticket for a person
   (``needs_person``) with a history note and a wallboard alert;
4. takes the survey's result from :mod:`callcentre.service.survey`.

The number dialled is checked against :data:`~callcentre.service.tickets.DIALLABLE` (digits and a
leading '+') before it is put into any AMI value.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config
from callcentre.domain.model import TicketStatus
from callcentre.domain.ports import Clock
from callcentre.domain.service import (
    CallbackResult,
    SurveyAnswer,
    SurveyOutcome,
    _into_calling_hours,
    needs_person,
    next_attempt,
    originate_result,
)
from callcentre.service.escalation import WALLBOARD, Publish
from callcentre.service.tickets import DIALLABLE, TicketService, add_history, load_ticket
from callcentre.storage.models import TicketRow
from callcentre.storage.service_models import AttemptState, CallbackAttempt
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger(__name__)

CALLBACK_CONTEXT = "callcentre-callback"
SURVEY_EXTEN = "survey"
ATTEMPT_VARIABLE = "CC_CALLBACK"
DEFAULT_DIAL_TEMPLATE = "Local/{number}@callcentre-outbound"
# An Originate with no OriginateResponse after ring time + this is given up (the AMI link dropped).
RESPONSE_GRACE = timedelta(seconds=120)
# An answered call-back whose survey never reported (server restart mid-call) is closed after this.
SURVEY_GRACE = timedelta(minutes=15)
ACTION_ID_PREFIX = "callcentre-callback-"


class Originate(Protocol):
    async def __call__(
        self,
        channel: str,
        context: str,
        exten: str,
        variables: Mapping[str, str],
        caller_id: str | None,
        timeout_ms: int,
        action_id: str,
    ) -> str: ...


class CallbackScheduler:
    """Places, matches and retries call-backs. Owns two tasks: the poller and the event consumer."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tickets: TicketService,
        cfg: Config,
        clock: Clock,
        originate: Originate | Callable[..., Awaitable[str]],
        publish: Publish | None = None,
        dial_template: str = DEFAULT_DIAL_TEMPLATE,
        caller_id: str | None = None,
        poll_seconds: float = 15.0,
        fence: Callable[[AsyncSession], Awaitable[bool]] | None = None,
    ) -> None:
        """``fence(session)``: asked inside the transaction that claims an attempt, before it commits;
        False (this node is no longer the cluster's leader) leaves the attempt to the leader."""
        if "{number}" not in dial_template or any(c in dial_template for c in "\r\n,"):
            raise ValueError("dial_template must contain {number} and no comma or line break")
        self._sessions = sessions
        self._tickets = tickets
        self._cfg = cfg
        self._clock = clock
        self._originate = originate
        self._publish = publish
        self._dial_template = dial_template
        self._caller_id = caller_id
        self._poll_seconds = poll_seconds
        self._fence = fence
        self._events: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(maxsize=1000)
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._poll(), name="callback-poller"),
            asyncio.create_task(self._consume(), name="callback-events"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    def feed(self, message: Mapping[str, Any]) -> None:
        """Give an AMI event (sync, from the link's event callback); only OriginateResponse is kept."""
        if str(message.get("Event", "")) != "OriginateResponse":
            return
        try:
            self._events.put_nowait(message)
        except asyncio.QueueFull:
            log.error("callback event dropped: queue full", action_id=message.get("ActionID"))

    async def _poll(self) -> None:
        await run_periodically("callback-poller", self.run_due, self._poll_seconds)  # through a database hiccup

    async def _consume(self) -> None:
        while True:
            message = await self._events.get()
            try:
                await self.handle_event(message)
            except Exception:
                log.exception("OriginateResponse not handled", action_id=message.get("ActionID"))

    # --- placing calls --------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Sweep stale attempts, then place every due one; returns how many Originates were sent."""
        now = self._clock.now()
        await self._sweep(now)
        q = (
            select(CallbackAttempt.id)
            .where(CallbackAttempt.state == AttemptState.SCHEDULED.value, CallbackAttempt.scheduled_at <= now)
            .order_by(CallbackAttempt.scheduled_at, CallbackAttempt.id)
        )
        async with self._sessions() as s:
            due = list((await s.execute(q)).scalars())
        placed = 0
        for attempt_id in due:
            placed += await self._place(attempt_id)
        return placed

    async def _sweep(self, now: datetime) -> None:
        ring = timedelta(seconds=self._cfg.service.callback.ring_seconds)
        async with self._sessions() as s:
            stale = (
                await s.execute(
                    select(CallbackAttempt.id, CallbackAttempt.state).where(
                        (
                            (CallbackAttempt.state == AttemptState.DIALLING.value)
                            & (CallbackAttempt.started_at < now - ring - RESPONSE_GRACE)
                        )
                        | (
                            (CallbackAttempt.state == AttemptState.ANSWERED.value)
                            & (CallbackAttempt.started_at < now - SURVEY_GRACE)
                        )
                    )
                )
            ).all()
        for attempt_id, st in stale:
            if st == AttemptState.DIALLING.value:
                await self._finish(attempt_id, CallbackResult.FAILED, None, "no OriginateResponse (AMI link lost?)",
                                   retry_as=CallbackResult.CONGESTION)
            else:
                await self._finish(attempt_id, CallbackResult.NO_INPUT, 4, "survey never reported")

    async def _place(self, attempt_id: int) -> int:
        now = self._clock.now()
        policy = self._cfg.service.callback
        async with self._sessions() as s, s.begin():
            if self._fence is not None and not await self._fence(s):
                return 0
            attempt = await s.get(CallbackAttempt, attempt_id)
            if attempt is None or attempt.state != AttemptState.SCHEDULED.value:
                return 0
            row = await s.get(TicketRow, attempt.ticket_id)
            if row is None or row.status != TicketStatus.RESOLVED.value:
                attempt.state = AttemptState.CANCELLED.value
                attempt.finished_at = now
                attempt.error = "ticket no longer resolved"
                return 0
            number = attempt.number or ""
            ok = bool(DIALLABLE.match(number))
            # The server may have been down through the evening: never call outside calling hours.
            allowed = _into_calling_hours(now, policy, _zone(self._cfg))
            if ok and allowed > now:
                attempt.scheduled_at = allowed
                return 0
            if ok:
                attempt.state = AttemptState.DIALLING.value
                attempt.started_at = now
                attempt.action_id = action_id = f"{ACTION_ID_PREFIX}{attempt.id}"
            ticket_number = row.number
        if not ok:
            await self._finish(attempt_id, CallbackResult.FAILED, None, "no diallable number on the ticket", flag_now=True)
            return 0
        blog = log.bind(ticket=ticket_number, attempt_id=attempt_id, action_id=action_id)
        try:
            await self._originate(
                self._dial_template.format(number=number),
                CALLBACK_CONTEXT,
                SURVEY_EXTEN,
                {"TICKET": ticket_number, ATTEMPT_VARIABLE: str(attempt_id)},
                self._caller_id,
                policy.ring_seconds * 1000,
                action_id=action_id,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, link down, timeout: a system failure, not the owner's
            blog.warning("call-back originate failed", error=f"{type(exc).__name__}: {exc}")
            await self._finish(attempt_id, CallbackResult.FAILED, None, f"originate: {type(exc).__name__}: {exc}",
                               retry_as=CallbackResult.CONGESTION)
            return 0
        blog.info("call-back placed")
        return 1

    # --- outcomes -------------------------------------------------------------------------------

    async def handle_event(self, message: Mapping[str, Any]) -> None:
        """Match an OriginateResponse to its attempt by ActionID."""
        action_id = str(message.get("ActionID", "")).strip()
        if not action_id.startswith(ACTION_ID_PREFIX):
            return  # the call distribution's, or another AMI client's
        async with self._sessions() as s:
            attempt = (
                await s.execute(select(CallbackAttempt).where(CallbackAttempt.action_id == action_id))
            ).scalar_one_or_none()
        if attempt is None:
            return  # from a database since restored, or another server's with a look-alike ActionID
        if attempt.state != AttemptState.DIALLING.value:
            return  # already finished (duplicate event, or the survey reported first)
        try:
            result = originate_result(str(message.get("Reason", "")))
            code: int | None = int(str(message.get("Reason", "")).strip())
        except ValueError:
            result, code = CallbackResult.FAILED, None
        if result is CallbackResult.ANSWERED:
            async with self._sessions() as s, s.begin():
                fresh = await s.get(CallbackAttempt, attempt.id)
                if fresh is not None and fresh.state == AttemptState.DIALLING.value:
                    fresh.state = AttemptState.ANSWERED.value
                    fresh.result = result.value
                    fresh.reason_code = code
            log.info("call-back answered", attempt_id=attempt.id, action_id=action_id)
            return
        await self._finish(attempt.id, result, code, None)

    async def record_answer(self, attempt_id: int | None, ticket_id: int, outcome: SurveyOutcome) -> None:
        """The survey heard 1 or 2: act on the ticket, and end the attempt as answered."""
        if outcome.answer is SurveyAnswer.NO_ANSWER:
            await self.record_no_answer(attempt_id, ticket_id, CallbackResult.NO_INPUT)
            return
        await self._tickets.apply_survey(ticket_id, outcome)
        attempt = await self._attempt_for(attempt_id, ticket_id)
        if attempt is None:
            return
        async with self._sessions() as s, s.begin():
            fresh = await s.get(CallbackAttempt, attempt)
            if fresh is not None:
                fresh.state = AttemptState.DONE.value
                fresh.result = CallbackResult.ANSWERED.value
                fresh.reason_code = fresh.reason_code or 4
                fresh.survey_answer = outcome.answer.value
                fresh.finished_at = self._clock.now()

    async def record_rating(self, attempt_id: int | None, ticket_id: int, rating: int) -> None:
        if rating not in range(1, 6):
            raise ValueError("rating must be 1 to 5")
        attempt = await self._attempt_for(attempt_id, ticket_id, any_state=True)
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            row, svc = await load_ticket(s, ticket_id)
            svc.satisfaction = rating
            svc.updated_at = now
            if attempt is not None:
                fresh = await s.get(CallbackAttempt, attempt)
                if fresh is not None:
                    fresh.rating = rating
            add_history(s, ticket_id, "rating", row.status, row.status, "callback", f"rating {rating}", now,
                        {"rating": rating})

    async def record_no_answer(self, attempt_id: int | None, ticket_id: int, result: CallbackResult) -> None:
        """The owner picked up but gave no answer (voicemail, silence) or hung up: retry per policy."""
        attempt = await self._attempt_for(attempt_id, ticket_id)
        if attempt is not None:
            await self._finish(attempt, result, 4, None)

    async def _attempt_for(self, attempt_id: int | None, ticket_id: int, any_state: bool = False) -> int | None:
        """The attempt a survey belongs to: the one named by CC_CALLBACK if it is this ticket's, else
        the ticket's latest answered/dialling one."""
        live = [AttemptState.DIALLING.value, AttemptState.ANSWERED.value]
        async with self._sessions() as s:
            if attempt_id is not None:
                a = await s.get(CallbackAttempt, attempt_id)
                if a is not None and a.ticket_id == ticket_id and (any_state or a.state in live):
                    return a.id
            q = select(CallbackAttempt.id).where(CallbackAttempt.ticket_id == ticket_id)
            if not any_state:
                q = q.where(CallbackAttempt.state.in_(live))
            return (await s.execute(q.order_by(CallbackAttempt.attempt_no.desc()).limit(1))).scalar_one_or_none()

    async def _finish(
        self,
        attempt_id: int,
        result: CallbackResult,
        code: int | None,
        error: str | None,
        retry_as: CallbackResult | None = None,
        flag_now: bool = False,
    ) -> None:
        """End an attempt; schedule the next or flag the ticket for a person."""
        now = self._clock.now()
        policy = self._cfg.service.callback
        flagged = False
        async with self._sessions() as s, s.begin():
            attempt = await s.get(CallbackAttempt, attempt_id)
            if attempt is None or attempt.state in (AttemptState.DONE.value, AttemptState.CANCELLED.value):
                return
            attempt.state = AttemptState.DONE.value
            attempt.result = result.value
            attempt.reason_code = code
            attempt.error = error[:300] if error else None
            attempt.finished_at = now
            row, svc = await load_ticket(s, attempt.ticket_id)
            decide = retry_as or result
            note = f"call-back attempt {attempt.attempt_no}: {result.value}" + (f" ({error})" if error else "")
            add_history(s, row.id, "callback_attempt", row.status, row.status, "callback", note, now,
                        {"attempt": attempt.attempt_no, "result": result.value, "reason": code})
            if row.status != TicketStatus.RESOLVED.value:
                return  # closed or reopened meanwhile: nothing to call back about
            nxt = None if flag_now else next_attempt(policy, attempt.attempt_no, decide, now, self._cfg.centre.timezone)
            if nxt is not None:
                s.add(
                    CallbackAttempt(
                        ticket_id=row.id, attempt_no=attempt.attempt_no + 1, state=AttemptState.SCHEDULED.value,
                        number=attempt.number, scheduled_at=nxt,
                    )
                )
            elif flag_now or needs_person(policy, attempt.attempt_no, decide):
                svc.needs_person = True
                svc.updated_at = now
                add_history(s, row.id, "callback_needs_person", row.status, row.status, "callback",
                            f"call-back gave up after {attempt.attempt_no} attempt(s): a person must call the owner",
                            now, {"last_result": result.value})
                flagged = True
            number = row.number
        log.info("call-back attempt ended", ticket=number, attempt_id=attempt_id, result=result.value,
                 next_at=nxt.isoformat() if nxt else None, needs_person=flagged)
        if flagged and self._publish is not None:
            try:
                res = self._publish(WALLBOARD, {"type": "callback_needs_person", "ticket": number})
                if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
                    await res
            except Exception as exc:
                log.warning("alert not published", ticket=number, error=f"{type(exc).__name__}: {exc}")

    async def attempts(self, ticket_id: int) -> list[dict[str, Any]]:
        """Every attempt on the ticket, oldest first (for the desk)."""
        q = select(CallbackAttempt).where(CallbackAttempt.ticket_id == ticket_id).order_by(CallbackAttempt.attempt_no)
        async with self._sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            {
                "attempt": a.attempt_no, "state": a.state, "number": a.number, "scheduled_at": a.scheduled_at,
                "started_at": a.started_at, "finished_at": a.finished_at, "result": a.result,
                "reason_code": a.reason_code, "error": a.error, "survey_answer": a.survey_answer, "rating": a.rating,
                "action_id": a.action_id,
            }
            for a in rows
        ]


def _zone(cfg: Config) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(cfg.centre.timezone)


__all__ = [
    "ATTEMPT_VARIABLE", "CALLBACK_CONTEXT", "DEFAULT_DIAL_TEMPLATE", "SURVEY_EXTEN", "CallbackScheduler", "Originate",
]
