"""The FastAGI ``survey`` script: where an answered closing call-back lands.

As in ``agi-callback-survey.txt``: the ticket comes from the channel variable ``TICKET`` (set by the
Originate; the dialplan also passes it as arg 1), then the owner hears the intro, the ticket number,
that it was handled, and "press 1 if solved, 2 if not". 1 closes the ticket, 2 reopens it as major and
back to the agent who handled it; then a 1-5 rating. The 1/2 answer is written before anything else
is said, so an owner who hangs up during the rating has still been heard. A hang-up before the
answer (``WAIT FOR DIGIT`` → ``-1`` then ``HANGUP``, surfaced as :class:`CallerHungUp`) or silence is
reported to the call-back scheduler as ``hung_up`` / ``no_input`` so the retry policy decides.
"""

from __future__ import annotations

import enum
from typing import Awaitable, TypeVar

import structlog

from callcentre.domain.ticket_number import is_ticket_number
from callcentre.domain import speech
from callcentre.domain.ivr import RESULT_VARIABLE
from callcentre.domain.ports import CallerHungUp, Channel
from callcentre.domain.service import CallbackResult, SurveyAnswer, survey_outcome
from callcentre.service.callbacks import ATTEMPT_VARIABLE, CallbackScheduler
from callcentre.service.tickets import TicketService

log = structlog.get_logger(__name__)

T = TypeVar("T")


class SurveyResult(str, enum.Enum):
    CLOSED = "closed"
    REOPENED = "reopened"
    NO_INPUT = "no_input"
    HUNG_UP = "hung_up"
    UNKNOWN_TICKET = "unknown_ticket"


class SurveyScript:
    """One instance serves every survey call; per-call state lives in :meth:`run`'s locals."""

    def __init__(
        self,
        tickets: TicketService,
        callbacks: CallbackScheduler,
        default_language: str = "zh",
        digit_timeout_ms: int = 5000,
        tries: int = 2,
    ) -> None:
        self._tickets = tickets
        self._callbacks = callbacks
        self._default_language = default_language
        self._timeout = digit_timeout_ms
        self._tries = max(1, tries)

    async def run(self, ch: Channel) -> SurveyResult:
        blog = log.bind(uniqueid=ch.uniqueid, channel=ch.channel_name)
        ticket_id: int | None = None
        attempt_id: int | None = None
        answered: SurveyResult | None = None
        try:
            number = ((await ch.get_variable("TICKET")) or (ch.args[0] if ch.args else "") or "").strip().upper()
            raw_attempt = (await ch.get_variable(ATTEMPT_VARIABLE)) or ""
            attempt_id = int(raw_attempt) if raw_attempt.isdigit() else None
            if is_ticket_number(number):
                ticket_id = await self._tickets.id_for_number(number)
            if ticket_id is None:
                # Leave CC_RESULT unset: the dialplan hands the owner to a person.
                blog.warning("survey for an unknown ticket", ticket=number[:40])
                return SurveyResult.UNKNOWN_TICKET
            blog = blog.bind(ticket=number)
            # The owner's language, as the hotline IVR speaks to them; else the IVR's default. Not the
            # channel's: an Originate'd channel has the PBX's default language ("en" unless configured),
            # whatever the owner speaks (seen on a real Asterisk 20).
            owner_lang = await self._tickets.owner_language(ticket_id)
            lang = owner_lang if owner_lang in ("zh", "en") else self._default_language

            def p(*names: str) -> list[str]:
                return [f"{lang}/{n}" for n in names]

            intro = p("survey-intro", *speech.ticket_number(number, lang), "survey-done", "survey-solved-or-not")
            digit: str | None = None
            for i in range(self._tries):
                digit = await ch.play(intro if i == 0 else p("survey-solved-or-not"), escape_digits="12")
                if digit is None:
                    digit = await ch.wait_for_digit(self._timeout)
                if digit in ("1", "2"):
                    break
                digit = None
            if digit is None:
                await _shielded(ch, self._callbacks.record_no_answer(attempt_id, ticket_id, CallbackResult.NO_INPUT))
                blog.info("survey without an answer")
                await ch.play(p("goodbye"))
                await ch.set_variable(RESULT_VARIABLE, "done")
                await ch.hangup()
                return SurveyResult.NO_INPUT
            outcome = survey_outcome(digit, None)
            await _shielded(ch, self._callbacks.record_answer(attempt_id, ticket_id, outcome))
            solved = outcome.answer is SurveyAnswer.SOLVED
            answered = SurveyResult.CLOSED if solved else SurveyResult.REOPENED
            blog.info("survey answered", answer=outcome.answer.value)
            await ch.play(p("survey-closed" if solved else "survey-reopened"))
            rating = await ch.play(p("rate-service"), escape_digits="12345")
            if rating is None:
                rating = await ch.wait_for_digit(self._timeout)
            if rating in ("1", "2", "3", "4", "5"):
                await _shielded(ch, self._callbacks.record_rating(attempt_id, ticket_id, int(rating)))
                await ch.play(p("thanks-rating"))
            await ch.play(p("goodbye"))
            await ch.set_variable(RESULT_VARIABLE, "done")
            await ch.hangup()
            return answered
        except CallerHungUp:
            if answered is not None:
                blog.info("owner hung up after answering")
                return answered
            if ticket_id is not None:
                await _shielded(ch, self._callbacks.record_no_answer(attempt_id, ticket_id, CallbackResult.HUNG_UP))
            blog.info("owner hung up during the survey")
            return SurveyResult.HUNG_UP


async def _shielded(ch: Channel, aw: Awaitable[T]) -> T:
    """Use the AGI session's shield (its write survives the hang-up cancellation) when it has one."""
    shield = getattr(ch, "shielded", None)
    if shield is not None:
        return await shield(aw)
    return await aw


__all__ = ["SurveyResult", "SurveyScript"]
