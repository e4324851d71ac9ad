"""AMI leg correlation (callcentre/distribution/legs.py): offer <-> caller uniqueid <-> agent leg in
explicit states, and agents' phones busy on calls we did not route. Pure: no sockets, no AMI."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from callcentre.distribution.legs import AgentLegs, LegState, OfferLegs
from callcentre.domain.acd import Offer
from fakes import captured_logs

CALLER = "1795351990.1"


def offer(n: int = 1, agent: str = "7") -> Offer:
    return Offer(f"{CALLER}#{n}", CALLER, agent, "PJSIP/agent1", 10.0, "Zhang San", CALLER)


def test_an_offer_goes_queued_dialling_ringing_answered_and_is_forgotten_when_the_dial_returns() -> None:
    legs = OfferLegs()
    leg = legs.queued(offer(), CALLER)
    assert leg.state is LegState.QUEUED and legs.dialling(CALLER) is None  # not dialled yet: AMI is not ours
    assert legs.take(leg.offer_id) is True
    legs.dial_written(leg.offer_id)
    assert legs.dialling(CALLER) is leg and leg.state is LegState.DIALLING
    assert legs.dial_begin(CALLER, "1795351990.2", "PJSIP/agent1-0000002a") is leg
    assert (leg.state, leg.agent_uniqueid, leg.agent_channel) == (LegState.RINGING, "1795351990.2", "PJSIP/agent1-0000002a")
    assert legs.answered(CALLER) is leg and leg.state is LegState.ANSWERED
    assert legs.dial_returned(leg.offer_id) is leg
    assert legs.dialling(CALLER) is None and legs.get(leg.offer_id) is None and len(legs) == 0


def test_events_on_other_channels_are_not_ours() -> None:
    legs = OfferLegs()
    legs.queued(offer(), CALLER)
    legs.dial_written(f"{CALLER}#1")
    assert legs.dial_begin("1795351990.9", "x", "PJSIP/x-1") is None
    assert legs.answered(None) is None


def test_an_offer_taken_back_before_the_script_took_it_is_skipped_and_forgotten() -> None:
    legs = OfferLegs()
    legs.queued(offer(), CALLER)
    assert legs.cancel(f"{CALLER}#1", "agent paused").state is LegState.CANCELLED
    assert legs.take(f"{CALLER}#1") is False
    assert len(legs) == 0


def test_an_offer_taken_back_before_its_phone_rang_is_known_at_dial_begin_for_the_hang_up() -> None:
    legs = OfferLegs()
    leg = legs.queued(offer(), CALLER)
    legs.take(leg.offer_id)
    legs.cancel(leg.offer_id, "agent paused")  # between the take and the Dial being written
    legs.dial_written(leg.offer_id)
    assert legs.dialling(CALLER) is leg  # the Dial still goes out: its DialBegin must find the offer
    got = legs.dial_begin(CALLER, "1795351990.2", "PJSIP/agent1-0000002a")
    assert got is leg and leg.state is LegState.CANCELLED and leg.agent_channel == "PJSIP/agent1-0000002a"


def test_an_answer_on_a_cancelled_leg_does_not_make_it_answered() -> None:
    legs = OfferLegs()
    leg = legs.queued(offer(), CALLER)
    legs.take(leg.offer_id)
    legs.dial_written(leg.offer_id)
    legs.dial_begin(CALLER, "1795351990.2", "PJSIP/agent1-0000002a")
    legs.cancel(leg.offer_id, "ring timeout")
    with captured_logs() as logs:
        legs.answered(CALLER)
    assert leg.state is LegState.CANCELLED
    assert [e["event"] for e in logs] == ["offer leg event ignored"] and logs[0]["uniqueid"] == CALLER


def test_a_caller_who_leaves_takes_offers_still_in_the_inbox_along() -> None:
    legs = OfferLegs()
    legs.queued(offer(1), CALLER)
    legs.queued(offer(2, agent="8"), CALLER)
    legs.queued(Offer("other#1", "other", "9", "PJSIP/agent9", 10.0, "x", "other"), "other")
    legs.forget_caller(CALLER)
    assert len(legs) == 1 and legs.get("other#1") is not None


def test_every_leg_transition_is_one_log_line_with_the_callers_uniqueid() -> None:
    legs = OfferLegs()
    with captured_logs() as logs:
        leg = legs.queued(offer(), CALLER)
        legs.take(leg.offer_id)
        legs.dial_written(leg.offer_id)
        legs.dial_begin(CALLER, "1795351990.2", "PJSIP/agent1-0000002a")
        legs.answered(CALLER)
    changes = [(e["transition"], e["from_state"], e["to_state"], e["uniqueid"]) for e in logs
               if e["event"] == "offer leg state changed"]
    assert changes == [
        ("dial_written", "queued", "dialling", CALLER),
        ("dial_begin", "dialling", "ringing", CALLER),
        ("answered", "ringing", "answered", CALLER),
    ]


# --------------------------------------------------------------------------------- the agents' phones
@dataclass
class Rec:
    """What the AMI call tracker lists after a (re)login."""

    uniqueid: str
    channel: str
    answered_at: float | None = 1.0


def agent_of(channel: str) -> str | None:
    return {"PJSIP/agent1": "1", "PJSIP/agent2": "2"}.get(channel.rpartition("-")[0])


def test_the_agents_leg_is_what_chanspy_gets_until_it_hangs_up() -> None:
    legs = AgentLegs()
    legs.dialled("1", "u1", "PJSIP/agent1-0001")
    assert legs.is_dialled("u1") and legs.current_channel("1") == "PJSIP/agent1-0001"
    legs.callback_leg("1", "u2", "PJSIP/agent1-0002")  # a later call-back on the same phone
    assert legs.current_channel("1") == "PJSIP/agent1-0002" and not legs.is_dialled("u2")
    assert legs.hung_up("u1") is None  # the older leg goes; the current one stays
    assert legs.current_channel("1") == "PJSIP/agent1-0002"
    legs.hung_up("u2")
    assert legs.current_channel("1") is None


def test_a_leg_of_an_offer_already_closed_is_ours_but_not_the_agents_call() -> None:
    legs = AgentLegs()
    legs.dialled("1", "u1", "PJSIP/agent1-0001", current=False)
    assert legs.is_dialled("u1") and legs.current_channel("1") is None


def test_a_call_we_did_not_route_keeps_the_agent_busy_until_its_channel_hangs_up() -> None:
    legs = AgentLegs()
    legs.elsewhere("2", "x1")
    assert legs.is_elsewhere("x1") and not legs.is_dialled("x1")
    assert legs.hung_up("x1") == "2"
    assert legs.hung_up("x1") is None  # a replayed Hangup frees nobody twice


@pytest.mark.parametrize("answered_at, busy", [(1.0, True), (None, False)])
def test_resync_rebuilds_the_foreign_calls_and_drops_legs_asterisk_no_longer_has(answered_at, busy) -> None:
    legs = AgentLegs()
    legs.dialled("1", "gone", "PJSIP/agent1-0001")  # its Hangup was lost while the link was down
    legs.dialled("1", "ours", "PJSIP/agent1-0003")
    legs.elsewhere("2", "stale")
    refs = legs.resync([Rec("ours", "PJSIP/agent1-0003"), Rec("x2", "PJSIP/agent2-0009", answered_at),
                        Rec("trunk", "SIP/trunk-0001")], agent_of)
    assert refs == ({"2": {"x2"}} if busy else {})  # our own leg is not "elsewhere"; ringing is not busy
    assert not legs.is_elsewhere("stale") and legs.is_elsewhere("x2") is busy
    assert not legs.is_dialled("gone") and legs.is_dialled("ours")
    assert legs.current_channel("1") == "PJSIP/agent1-0003"
