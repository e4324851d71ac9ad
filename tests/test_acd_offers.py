"""Offer states and timer kinds of the distributor (domain/acd): named transitions, one log line each with
the call's uniqueid, and nothing outside the table."""

from __future__ import annotations

import pytest

from callcentre.config import ACDConfig
from callcentre.domain.acd import (
    OFFER_TRANSITIONS,
    Agent,
    Distributor,
    IllegalOfferTransition,
    OfferState,
    PriorityLevel,
    TimerKind,
    WaitingCall,
    offers_in,
)
from callcentre.domain.ports import FakeClock
from fakes import captured_logs


def setup(**cfg) -> tuple[Distributor, FakeClock, str]:
    clock = FakeClock()
    d = Distributor(ACDConfig(**cfg), clock)
    for a in ("a1", "a2"):
        d.add_agent(Agent(a, a, a, f"PJSIP/{a}"))
        d.login(a)
    [offer] = offers_in(d.enqueue(WaitingCall("c1", "u-c1", "13800138000", None, None, None, PriorityLevel.NORMAL,
                                              clock.now())))
    return d, clock, offer.offer_id


def transitions(logs) -> list[tuple[str, str, str, str]]:
    return [(e["transition"], e["from_state"], e["to_state"], e["uniqueid"]) for e in logs
            if e["event"] == "offer state changed"]


def test_an_answered_offer_goes_offered_ringing_answered_ended() -> None:
    d, clock, oid = setup()
    with captured_logs() as logs:
        d.on_ringing(oid)
        clock.advance(3)
        d.on_answered(oid)
        d.on_call_ended(oid)
    assert transitions(logs) == [
        ("ringing", "offered", "ringing", "u-c1"),
        ("answered", "ringing", "answered", "u-c1"),
        ("call_ended", "answered", "ended", "u-c1"),
    ]


@pytest.mark.parametrize("event, end", [
    (lambda d, oid: d.on_ring_timeout(oid), ("rang_out", "ringing", "missed")),
    (lambda d, oid: d.on_offer_failed(oid, "BUSY"), ("refused", "ringing", "failed")),
    (lambda d, oid: d.on_offer_failed(oid, "CANCEL"), ("cancelled", "ringing", "cancelled")),
    (lambda d, oid: d.pause("a1", "break"), ("cancelled", "ringing", "cancelled")),
])
def test_an_unanswered_offer_ends_by_one_named_transition(event, end) -> None:
    d, _, oid = setup()
    d.on_ringing(oid)
    with captured_logs() as logs:
        event(d, oid)
    assert transitions(logs)[0] == (*end, "u-c1")


def test_the_ring_deadline_is_a_timer_kind_and_stale_after_the_offer_moved_on() -> None:
    d, clock, oid = setup()
    assert {k for k in TimerKind} == set(d._timer_handlers)  # every kind has its handler
    clock.advance(ACDConfig().ring_timeout_seconds + ACDConfig().ring_cycle_seconds + 0.1)
    with captured_logs() as logs:
        out = d.tick()
    assert transitions(logs)[0] == ("rang_out", "offered", "missed", "u-c1")  # never rang: set-up allowance over
    # the call went to the other agent at once
    assert [o.agent_id for o in offers_in(out)] == ["a2"]


def test_transitions_outside_the_table_are_refused() -> None:
    d, _, oid = setup()
    d.on_ringing(oid)
    d.on_answered(oid)
    orec = d._offers[oid]
    with pytest.raises(IllegalOfferTransition, match="cannot rang_out while answered"):
        d._offer_go(orec, "rang_out")
    assert orec.state is OfferState.ANSWERED
    # the table covers every state: only OFFERED and RINGING are open, ANSWERED only ends
    assert {frm for t in OFFER_TRANSITIONS.values() for frm in t} == {
        OfferState.OFFERED, OfferState.RINGING, OfferState.ANSWERED}
