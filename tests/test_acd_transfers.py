"""Transferred calls in the pure distributor (domain/acd): offered only to their target (one agent or a
skill group), never twice to the same agent, ahead of the queue, given up on once when nobody of the
target is left (TargetUnavailable), retargeted, and counted as offers but not as new calls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from callcentre.config import ACDConfig
from callcentre.domain.acd import (
    Agent,
    AgentState,
    CancelOffer,
    Distributor,
    DuplicateCall,
    NoAgentAvailable,
    OnlyFor,
    PriorityLevel,
    TargetUnavailable,
    WaitingCall,
    offers_in,
)
from callcentre.domain.ports import FakeClock


def world(*agents: tuple[str, frozenset[str]], ready: tuple[str, ...] | None = None, **cfg) -> tuple[Distributor, FakeClock]:
    clock = FakeClock()
    d = Distributor(ACDConfig(**{"wrapup_seconds": 5, **cfg}), clock)
    for agent_id, skills in agents:
        d.add_agent(Agent(agent_id, agent_id, agent_id, f"PJSIP/{agent_id}", skills=skills))
        clock.advance(1)  # a registered first is idle longest
        if ready is None or agent_id in ready:
            d.login(agent_id)
    return d, clock


def call(clock: FakeClock, call_id: str = "u1", *, only: OnlyFor | None = None, prefix: str = "",
         wait: float | None = None, level: PriorityLevel = PriorityLevel.NORMAL) -> WaitingCall:
    return WaitingCall(call_id, call_id, "13800138000", None, None, None, level, clock.now(), only=only,
                       offer_prefix=prefix, target_wait_seconds=wait)


def answered(d: Distributor, clock: FakeClock, call_id: str = "u1") -> str:
    """A caller answered by the first ready agent; returns the offer id."""
    [offer] = offers_in(d.enqueue(call(clock, call_id)))
    d.on_ringing(offer.offer_id)
    d.on_answered(offer.offer_id)
    return offer.offer_id


def test_only_for_is_one_agent_or_one_skill() -> None:
    for bad in ({}, {"agent_id": "a", "skill": "repair"}, {"skill": "Repair!"}):
        with pytest.raises(ValueError):
            OnlyFor(**bad)
    assert OnlyFor(agent_id="7").describe() == "agent:7" and OnlyFor(skill="fees").describe() == "skill:fees"
    with pytest.raises(ValueError):
        call(FakeClock(), prefix="x#1")  # the prefix is part of an offer id


def test_a_blind_transfer_comes_back_under_the_same_call_id_and_rings_only_its_agent() -> None:
    d, clock = world(("a1", frozenset()), ("a2", frozenset()), ("a3", frozenset()))
    first = answered(d, clock)
    assert first == "u1#1" and d.agent_state("a1") is AgentState.ON_CALL
    d.on_call_ended(first)  # the first agent hands the caller over
    with pytest.raises(DuplicateCall):
        d.enqueue(call(clock))  # an ordinary caller cannot come back under a finished call's id
    out = d.enqueue(call(clock, only=OnlyFor(agent_id="a3"), prefix="x1-", wait=60))
    [offer] = offers_in(out)
    # a2 has been idle longest, but the transfer is for a3; its offer is named apart from the first
    assert (offer.agent_id, offer.offer_id) == ("a3", "u1#x1-1")
    assert not [x for x in out if not hasattr(x, "offer")]  # no announcement for a transferred caller
    d.on_ringing(offer.offer_id)
    d.on_answered(offer.offer_id)
    assert d.agent_state("a3") is AgentState.ON_CALL
    m = d.metrics_snapshot()
    # one call entered and answered; two offers answered (the new one counts for the two-ring figures)
    assert (m.calls_entered, m.calls_answered, m.offers_answered) == (1, 1, 2)
    assert d.snapshot().agents[2].offers_today == 1


def test_the_target_agent_who_lets_it_ring_out_is_not_rung_again_and_the_call_is_given_up_on_once() -> None:
    d, clock = world(("a1", frozenset()), ("a2", frozenset()))
    d.on_call_ended(answered(d, clock))
    [offer] = offers_in(d.enqueue(call(clock, only=OnlyFor(agent_id="a2"), prefix="x1-")))
    d.on_ringing(offer.offer_id)
    clock.advance(10)
    out = d.on_ring_timeout(offer.offer_id)
    assert offers_in(out) == []  # a2 is ready again, but missed it: not offered twice
    [gone] = [x for x in out if isinstance(x, TargetUnavailable)]
    assert (gone.call_id, gone.target, gone.reason) == ("u1", OnlyFor(agent_id="a2"), "missed")
    assert d.agent_state("a2") is AgentState.READY
    assert d.metrics_snapshot().offers_missed == 1  # a missed offer like any other
    # later events do not say it again
    clock.advance(30)
    out = d.tick()  # a1's wrap-up ends: a1 is not the target either
    assert out == [] and d.agent_state("a1") is AgentState.READY
    assert [q.target for q in d.snapshot().queue] == ["agent:a2"]


def test_a_skill_group_moves_on_to_the_next_member_and_never_to_someone_outside_it() -> None:
    fees = frozenset({"fees"})
    d, clock = world(("a1", frozenset()), ("g1", fees), ("g2", fees), ("other", frozenset({"repair"})))
    d.on_call_ended(answered(d, clock))  # a1 took it
    [o1] = offers_in(d.enqueue(call(clock, only=OnlyFor(skill="fees"), prefix="x1-", wait=60)))
    assert o1.agent_id == "g1"  # the longest idle of the group
    d.on_ringing(o1.offer_id)
    clock.advance(10)
    [o2] = offers_in(d.on_ring_timeout(o1.offer_id))
    assert (o2.agent_id, o2.offer_id) == ("g2", "u1#x1-2")
    d.on_ringing(o2.offer_id)
    out = d.on_offer_failed(o2.offer_id, "BUSY")
    # both members missed it; "other" is ready but not in the group
    assert offers_in(out) == [] and [x.reason for x in out if isinstance(x, TargetUnavailable)] == ["missed"]
    assert d.agent_state("other") is AgentState.READY


def test_a_target_nobody_staffs_is_given_up_on_at_once_one_who_logs_out_while_it_waits_too() -> None:
    d, clock = world(("a1", frozenset()), ("a2", frozenset()), ready=("a1",))
    d.on_call_ended(answered(d, clock))
    out = d.enqueue(call(clock, only=OnlyFor(agent_id="a2"), prefix="x1-"))
    assert [(x.reason, x.target.agent_id) for x in out if isinstance(x, TargetUnavailable)] == [("not_staffed", "a2")]

    # the target is wrapping up another call: the transfer waits for them ...
    d, clock = world(("a1", frozenset()), ("a2", frozenset()), ("a3", frozenset()))
    d.on_call_ended(answered(d, clock, "u1"))  # a1
    d.on_call_ended(answered(d, clock, "u2"))  # a2, now wrapping up
    assert d.agent_state("a2") is AgentState.WRAP_UP
    assert d.enqueue(call(clock, "u1", only=OnlyFor(agent_id="a2"), prefix="x1-")) == []
    # ... a ready agent who is not the target logging out changes nothing; the target logging out does
    assert d.logout("a3") == []
    [gone] = d.logout("a2")
    assert isinstance(gone, TargetUnavailable) and gone.reason == "not_staffed"

    # and a target whose wrap-up ends gets it
    d, clock = world(("a1", frozenset()), ("a2", frozenset()))
    d.on_call_ended(answered(d, clock, "u1"))
    d.on_call_ended(answered(d, clock, "u2"))
    assert d.enqueue(call(clock, "u1", only=OnlyFor(agent_id="a2"), prefix="x1-")) == []
    clock.advance(5)
    [offer] = offers_in(d.tick())
    assert offer.agent_id == "a2"


def test_transfers_go_ahead_of_the_queue_and_the_time_limit_gives_up_while_not_ringing() -> None:
    d, clock = world(("a1", frozenset()), ("a2", frozenset()), ("a3", frozenset()))
    d.on_call_ended(answered(d, clock, "u1"))  # a1
    answered(d, clock, "u2")  # a2 busy
    answered(d, clock, "u3")  # a3 busy
    # an emergency caller waits; then a transfer to a3 arrives
    assert offers_in(d.enqueue(call(clock, "u9", level=PriorityLevel.EMERGENCY))) == []
    assert d.enqueue(call(clock, "u1", only=OnlyFor(agent_id="a3"), prefix="x1-", wait=12)) == []
    d.on_call_ended("u3#1")
    clock.advance(5)
    offers = offers_in(d.tick())  # the wrap-ups end: the transfer, not the emergency, is a3's
    assert {(o.call_id, o.agent_id) for o in offers} == {("u1", "a3"), ("u9", "a1")}
    [offer] = [o for o in offers if o.agent_id == "a3"]
    # ringing when the time limit comes (12 s after it came): the ring gets its chance first
    d.on_ringing(offer.offer_id)
    clock.advance(8)
    assert not [x for x in d.tick() if isinstance(x, (TargetUnavailable, CancelOffer))]
    # then it rings out: a3 was the whole target
    clock.advance(3)
    assert [x.reason for x in d.tick() if isinstance(x, TargetUnavailable)] == ["missed"]
    d3, clock3 = world(("a1", frozenset()), ("a2", frozenset()))
    d3.on_call_ended(answered(d3, clock3, "u1"))
    answered(d3, clock3, "u2")  # a2 on a call the whole time
    assert d3.enqueue(call(clock3, "u1", only=OnlyFor(agent_id="a2"), prefix="x1-", wait=40)) == []
    clock3.advance(39)
    assert d3.tick() == []
    clock3.advance(2)
    assert [x.reason for x in d3.tick() if isinstance(x, TargetUnavailable)] == ["timeout"]


def test_retargeting_to_the_queue_or_back_to_the_first_agent() -> None:
    d, clock = world(("a1", frozenset()), ("a2", frozenset()), ("a3", frozenset()))
    first = answered(d, clock)  # a1
    d.on_call_ended(first)
    [offer] = offers_in(d.enqueue(call(clock, only=OnlyFor(agent_id="a2"), prefix="x1-")))
    d.on_ringing(offer.offer_id)
    out = d.on_ring_timeout(offer.offer_id)
    assert [x.reason for x in out if isinstance(x, TargetUnavailable)] == ["missed"]
    # back to the first agent (ending the wrap-up early to take it)
    assert offers_in(d.retarget("u1", OnlyFor(agent_id="a1"), 60)) == []  # a1 still wrapping up
    clock.advance(1)
    [back] = offers_in(d.agent_ready("a1"))
    assert (back.agent_id, back.offer_id) == ("a1", "u1#x1-2")
    # ... who is busy after all: to the queue, where a3 (who never had it) takes it first
    out = d.retarget("u1", None)
    assert [type(x) for x in out][:1] == [CancelOffer]
    [queued] = offers_in(out)
    assert queued.agent_id == "a3" and d.agent_state("a1") is AgentState.READY
    assert d.snapshot().queue[0].target is None


def test_retargeted_to_the_queue_with_nobody_staffed_the_caller_is_told() -> None:
    d, clock = world(("a1", frozenset()))
    first = answered(d, clock)
    d.on_call_ended(first)
    d.logout("a1")
    out = d.enqueue(call(clock, only=OnlyFor(skill="fees"), prefix="x1-"))
    assert [x.reason for x in out if isinstance(x, TargetUnavailable)] == ["not_staffed"]
    assert [type(x) for x in d.retarget("u1", None)] == [NoAgentAvailable]
    # the transferred caller hangs up: it was counted as a call once, when it first came
    d.withdraw("u1", "abandoned", clock.now() + timedelta(seconds=1))
    m = d.metrics_snapshot()
    assert (m.calls_entered, m.calls_answered, m.calls_abandoned) == (1, 1, 0)
