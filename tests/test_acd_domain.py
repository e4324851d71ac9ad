"""Automatic call distribution, the pure domain: selection rules, agent transitions, the two-ring
rule and its measurement, all driven by a FakeClock (no sockets, no sleeping)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from callcentre.config import ACDConfig, BusinessHours
from callcentre.domain.acd import (
    Agent,
    AgentPaused,
    AgentState,
    Alert,
    AlertKind,
    Announce,
    CancelOffer,
    Distributor,
    DuplicateCall,
    IllegalTransition,
    MaxWaitReached,
    NoAgentAvailable,
    PauseReason,
    PriorityLevel,
    RingOnDuty,
    UnknownAgent,
    UnknownCall,
    UnknownOffer,
    WaitingCall,
    WithdrawReason,
    business_hours_open,
    classify_priority,
    offers_in,
)
from callcentre.domain.acd_metrics import AcdMetrics, percentile
from callcentre.domain.ports import FakeClock

L = PriorityLevel


def make(**cfg: object) -> tuple[Distributor, FakeClock]:
    clock = FakeClock()
    return Distributor(ACDConfig(**cfg), clock), clock


def add(d: Distributor, agent_id: str, skills=(), langs=(), login: bool = True, **kw: object) -> Agent:
    a = Agent(
        agent_id, agent_id.upper(), agent_id, f"PJSIP/{agent_id}", frozenset(skills), frozenset(langs), **kw
    )
    d.add_agent(a)
    if login:
        d.login(agent_id)
    return a


def wc(
    clock: FakeClock,
    call_id: str,
    level: PriorityLevel = L.NORMAL,
    skill: str | None = None,
    lang: str | None = None,
    prev: str | None = None,
    **kw: object,
) -> WaitingCall:
    return WaitingCall(
        call_id, "u-" + call_id, "13800138000", None, lang, skill, level, clock.now(), prev, **kw
    )


def only_offer(decisions) -> object:
    offers = offers_in(decisions)
    assert len(offers) == 1, decisions
    return offers[0]


def answer_and_end(d: Distributor, clock: FakeClock, offer_id: str, ring: float = 1.0, talk: float = 10.0):
    d.on_ringing(offer_id)
    clock.advance(ring)
    d.on_answered(offer_id)
    clock.advance(talk)
    return d.on_call_ended(offer_id)


def check_invariants(d: Distributor) -> None:
    """No caller waits unoffered while an eligible agent is READY; no agent holds two offers."""
    snap = d.snapshot()
    unoffered = [q for q in snap.queue if q.ringing_agent_id is None]
    idle = [a for a in snap.agents if a.state is AgentState.READY and not a.busy_elsewhere]
    assert not (unoffered and idle), (unoffered, idle)
    ringing = [q.ringing_agent_id for q in snap.queue if q.ringing_agent_id]
    assert len(ringing) == len(set(ringing))
    for a in snap.agents:
        assert (a.state is AgentState.RINGING) == (a.agent_id in ringing), a
    assert [q.position for q in snap.queue] == list(range(1, len(snap.queue) + 1))


# ---------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------
def test_priority_order_and_fifo_within_level() -> None:
    d, clock = make(wrapup_seconds=0)
    add(d, "a1", login=False)
    for cid, lvl in [
        ("n1", L.NORMAL),
        ("v1", L.VIP),
        ("n2", L.NORMAL),
        ("r1", L.REPEAT),
        ("e1", L.EMERGENCY),
        ("v2", L.VIP),
    ]:
        d.enqueue(wc(clock, cid, lvl))
        clock.advance(1)
    assert [d.position(c) for c in ("e1", "r1", "v1", "v2", "n1", "n2")] == [1, 2, 3, 4, 5, 6]
    served = []
    out = d.login("a1")
    while out:
        offer = only_offer(out)
        served.append(offer.call_id)
        out = answer_and_end(d, clock, offer.offer_id)
    assert served == ["e1", "r1", "v1", "v2", "n1", "n2"]
    check_invariants(d)


def test_skill_and_language_match_beats_idle_time() -> None:
    d, clock = make()
    add(d, "zh_repair", {"repair"}, {"zh"})
    clock.advance(1)
    add(d, "en_fees", {"fees"}, {"en"})
    clock.advance(1)
    add(d, "en_repair", {"repair"}, {"en"})
    assert only_offer(d.enqueue(wc(clock, "c1", skill="repair", lang="en"))).agent_id == "en_repair"


def test_language_ranks_above_skill() -> None:
    d, clock = make()
    add(d, "zh_repair", {"repair"}, {"zh"})
    clock.advance(1)
    add(d, "en_fees", {"fees"}, {"en"})
    assert only_offer(d.enqueue(wc(clock, "c1", skill="repair", lang="en"))).agent_id == "en_fees"
    # Skill only when nobody speaks the language: zh-only repair agent before the fees agent.
    d2, clock2 = make()
    add(d2, "zh_fees", {"fees"}, {"zh"})
    clock2.advance(1)
    add(d2, "zh_repair", {"repair"}, {"zh"})
    assert only_offer(d2.enqueue(wc(clock2, "c1", skill="repair", lang="en"))).agent_id == "zh_repair"


def test_fallback_to_any_ready_agent_longest_idle() -> None:
    d, clock = make()
    add(d, "first", {"fees"}, {"zh"})
    clock.advance(5)
    add(d, "second", {"complaint"}, {"zh"})
    offer = only_offer(d.enqueue(wc(clock, "c1", skill="repair", lang="en")))
    assert offer.agent_id == "first"  # nobody matches: any ready agent, idle longest
    check_invariants(d)


def test_call_without_requirements_matches_everyone() -> None:
    d, clock = make()
    add(d, "a1", {"fees"}, {"en"})
    clock.advance(1)
    add(d, "a2")
    assert only_offer(d.enqueue(wc(clock, "c1"))).agent_id == "a1"


def test_longest_idle_wins_and_ties_go_by_registration() -> None:
    d, clock = make()
    add(d, "a", login=False)
    add(d, "b", login=False)
    add(d, "c", login=False)
    d.login("b")
    clock.advance(2)
    d.login("a")
    d.login("c")
    assert only_offer(d.enqueue(wc(clock, "c1"))).agent_id == "b"
    assert only_offer(d.enqueue(wc(clock, "c2"))).agent_id == "a"  # a and c tie: a registered first
    assert only_offer(d.enqueue(wc(clock, "c3"))).agent_id == "c"


def test_previous_agent_preferred_when_ready_and_configurable() -> None:
    d, clock = make()
    add(d, "long_idle")
    clock.advance(10)
    add(d, "prev")
    assert only_offer(d.enqueue(wc(clock, "c1", prev="prev"))).agent_id == "prev"
    d2, clock2 = make(prefer_previous_agent=False)
    add(d2, "long_idle")
    clock2.advance(10)
    add(d2, "prev")
    assert only_offer(d2.enqueue(wc(clock2, "c1", prev="prev"))).agent_id == "long_idle"


def test_previous_agent_only_within_best_skill_tier_and_only_if_ready() -> None:
    d, clock = make()
    add(d, "prev", {"fees"}, {"zh"})
    add(d, "matcher", {"repair"}, {"zh"})
    assert (
        only_offer(d.enqueue(wc(clock, "c1", skill="repair", lang="zh", prev="prev"))).agent_id == "matcher"
    )
    d2, clock2 = make()
    add(d2, "prev")
    add(d2, "other")
    d2.pause("prev", PauseReason.BREAK)
    assert only_offer(d2.enqueue(wc(clock2, "c1", prev="prev"))).agent_id == "other"


def test_vip_prefers_vip_capable_and_emergency_prefers_senior() -> None:
    d, clock = make()
    add(d, "plain")
    clock.advance(1)
    add(d, "vip", vip_capable=True)
    clock.advance(1)
    add(d, "senior", senior=True)
    assert only_offer(d.enqueue(wc(clock, "v", L.VIP))).agent_id == "vip"
    assert only_offer(d.enqueue(wc(clock, "e", L.EMERGENCY))).agent_id == "senior"
    assert only_offer(d.enqueue(wc(clock, "n", L.NORMAL))).agent_id == "plain"


def test_freed_agent_takes_matching_call_within_top_level() -> None:
    d, clock = make(wrapup_seconds=0)
    add(d, "en_agent", {"fees"}, {"en"})
    busy = only_offer(d.enqueue(wc(clock, "busy")))
    d.on_answered(busy.offer_id)
    d.enqueue(wc(clock, "zh_old", lang="zh"))
    clock.advance(1)
    d.enqueue(wc(clock, "en_new", lang="en"))
    clock.advance(1)
    d.enqueue(wc(clock, "emerg_zh", L.EMERGENCY, lang="zh"))
    out = d.on_call_ended(busy.offer_id)
    assert only_offer(out).call_id == "emerg_zh"  # priority first, even without the language
    out = answer_and_end(d, clock, only_offer(out).offer_id)
    assert only_offer(out).call_id == "en_new"  # then the language match over the older call
    out = answer_and_end(d, clock, only_offer(out).offer_id)
    assert only_offer(out).call_id == "zh_old"


def test_two_callers_one_agent() -> None:
    d, clock = make(wrapup_seconds=5)
    add(d, "a1")
    first = only_offer(d.enqueue(wc(clock, "c1")))
    out = d.enqueue(wc(clock, "c2"))
    assert offers_in(out) == []
    ann = [x for x in out if isinstance(x, Announce)]
    assert ann and ann[0].position == 2 and ann[0].expected_wait_seconds is not None
    assert d.position("c2") == 2
    answer_and_end(d, clock, first.offer_id)
    assert d.agent_state("a1") is AgentState.WRAP_UP
    assert d.position("c2") == 1
    clock.advance(5)
    assert only_offer(d.tick()).call_id == "c2"
    check_invariants(d)


# ---------------------------------------------------------------------------------------------------
# The two-ring rule
# ---------------------------------------------------------------------------------------------------
def test_first_agent_misses_then_next_agent_at_once() -> None:
    d, clock = make(missed_offers_before_pause=3)
    add(d, "absent")
    clock.advance(1)
    add(d, "present")
    first = only_offer(d.enqueue(wc(clock, "c1")))
    assert first.agent_id == "absent" and first.ring_timeout_seconds == 10.0
    d.on_ringing(first.offer_id)
    clock.advance(9.9)
    assert d.tick() == []
    clock.advance(0.1)
    out = d.tick()
    assert isinstance(out[0], CancelOffer) and out[0].offer_id == first.offer_id
    second = only_offer(out)
    assert second.agent_id == "present" and second.call_id == "c1"
    assert not any(isinstance(x, Alert) for x in out)  # rang exactly the target: no breach
    assert d.agent_state("absent") is AgentState.READY
    # Asterisk's own DialEnd NOANSWER for the first offer arrives late: nothing happens twice.
    assert d.on_ring_timeout(first.offer_id) == []
    check_invariants(d)


def test_missed_agent_not_reoffered_same_call_while_another_is_ready() -> None:
    d, clock = make(missed_offers_before_pause=5)
    add(d, "a")
    add(d, "b")
    o1 = only_offer(d.enqueue(wc(clock, "c1")))
    assert o1.agent_id == "a"
    other = only_offer(d.enqueue(wc(clock, "c2")))
    assert other.agent_id == "b"
    d.on_answered(other.offer_id)
    d.on_call_ended(other.offer_id)
    d.ready("b")
    # b is READY again; a misses c1: c1 goes to b, not back to a even though a would be idle.
    out = d.on_ring_timeout(o1.offer_id)
    assert only_offer(out).agent_id == "b"
    # a single agent is re-offered the call they missed (better than nobody)
    d2, clock2 = make(missed_offers_before_pause=5)
    add(d2, "solo")
    o = only_offer(d2.enqueue(wc(clock2, "c1")))
    o2 = only_offer(d2.on_ring_timeout(o.offer_id))
    assert o2.agent_id == "solo" and o2.offer_id != o.offer_id


def test_agent_paused_after_n_missed_offers_with_alert() -> None:
    d, clock = make(missed_offers_before_pause=2)
    add(d, "absent")
    out = d.enqueue(wc(clock, "c1"))
    o1 = only_offer(out)
    out = d.on_ring_timeout(o1.offer_id)  # only agent: re-offered
    o2 = only_offer(out)
    assert o2.agent_id == "absent"
    out = d.on_ring_timeout(o2.offer_id)
    assert d.agent_state("absent") is AgentState.PAUSED
    paused = [x for x in out if isinstance(x, AgentPaused)]
    alerts = [x for x in out if isinstance(x, Alert)]
    assert paused == [AgentPaused("absent", PauseReason.MISSED_CALLS, clock.now(), automatic=True)]
    assert alerts and alerts[0].kind is AlertKind.AGENT_PAUSED_MISSED_CALLS
    snap = d.snapshot()
    assert snap.agents[0].pause_reason is PauseReason.MISSED_CALLS
    assert snap.agents[0].missed_today == 2 and snap.agents[0].two_ring_share == 0.0
    hist = d.take_history()
    assert hist[-1].event == "offer_missed" and hist[-1].to_state is AgentState.PAUSED
    assert d.take_history() == []


def test_answer_resets_missed_in_a_row() -> None:
    d, clock = make(missed_offers_before_pause=2, wrapup_seconds=0)
    add(d, "a")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    o = only_offer(d.on_ring_timeout(o.offer_id))
    answer_and_end(d, clock, o.offer_id)
    o = only_offer(d.enqueue(wc(clock, "c2")))
    d.on_ring_timeout(o.offer_id)
    assert d.agent_state("a") is AgentState.RINGING  # one miss in a row, not two


def test_unreachable_phone_pauses_at_once_busy_counts_as_missed() -> None:
    d, clock = make(missed_offers_before_pause=3)
    add(d, "offline")
    add(d, "busy")
    add(d, "ok")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    out = d.on_offer_failed(o.offer_id, "CHANUNAVAIL")
    assert d.agent_state("offline") is AgentState.PAUSED
    assert any(isinstance(x, Alert) and x.kind is AlertKind.PHONE_UNAVAILABLE for x in out)
    o = only_offer(out)
    assert o.agent_id == "busy"
    out = d.on_offer_failed(o.offer_id, "BUSY")
    assert d.agent_state("busy") is AgentState.READY
    assert only_offer(out).agent_id == "ok"
    assert d.snapshot().agents[1].missed_today == 1


def test_pausing_a_ringing_agent_reoffers_the_call() -> None:
    d, clock = make()
    add(d, "a1")
    clock.advance(1)
    add(d, "a2", login=False)
    assert only_offer(d.enqueue(wc(clock, "c0", L.VIP))).agent_id == "a1"
    d.enqueue(wc(clock, "c1"))
    assert d.position("c1") == 2
    out = d.login("a2")
    o = only_offer(out)
    assert (o.call_id, o.agent_id) == ("c1", "a2")
    out = d.pause("a2", PauseReason.BREAK)
    assert isinstance(out[0], CancelOffer) and out[0].offer_id == o.offer_id
    assert offers_in(out) == []  # nobody else free
    assert d.position("c1") == 2
    assert d.agent_state("a2") is AgentState.PAUSED
    assert d.snapshot().agents[1].missed_today == 0
    out = d.unpause("a2")
    assert only_offer(out).call_id == "c1"
    check_invariants(d)


def test_caller_abandons_while_ringing() -> None:
    d, clock = make()
    add(d, "a1")
    clock.advance(3)
    add(d, "a2")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    assert o.agent_id == "a1"
    d.on_ringing(o.offer_id)
    clock.advance(4)
    res = d.withdraw("c1", WithdrawReason.ABANDONED)
    assert res.cancelled_offer_id == o.offer_id and res.waited_seconds == pytest.approx(4.0)
    assert [x for x in res.decisions if isinstance(x, CancelOffer)][0].agent_id == "a1"
    assert d.agent_state("a1") is AgentState.READY
    # a1 keeps their place as the longest idle, and was not counted as missing anything
    assert only_offer(d.enqueue(wc(clock, "c2"))).agent_id == "a1"
    snap = d.snapshot()
    assert snap.agents[0].missed_today == 0
    assert snap.metrics.calls_abandoned == 1 and snap.metrics.abandon_rate == 1.0
    assert snap.metrics.avg_abandon_wait == pytest.approx(4.0)
    # Replayed hang-up and Asterisk's DialEnd CANCEL for the cancelled offer: no effect.
    assert d.withdraw("c1", WithdrawReason.ABANDONED).already_withdrawn
    assert d.on_offer_failed(o.offer_id, "CANCEL") == []
    assert d.metrics_snapshot().calls_abandoned == 1


def test_dialend_cancel_requeues_without_missed_count() -> None:
    d, clock = make()
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    out = d.on_offer_failed(o.offer_id, "CANCEL")
    o2 = only_offer(out)  # still waiting (the adapter withdraws it when the caller is gone)
    assert o2.call_id == "c1"


def test_wrapup_timing_and_early_ready() -> None:
    d, clock = make(wrapup_seconds=15)
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    answer_and_end(d, clock, o.offer_id)
    d.enqueue(wc(clock, "c2"))
    clock.advance(14.9)
    assert d.tick() == [] and d.agent_state("a1") is AgentState.WRAP_UP
    clock.advance(0.1)
    assert only_offer(d.tick()).call_id == "c2"
    # ending wrap-up early, and the stale timer does nothing later
    d2, clock2 = make(wrapup_seconds=30)
    add(d2, "a1")
    o = only_offer(d2.enqueue(wc(clock2, "c1")))
    answer_and_end(d2, clock2, o.offer_id)
    d2.ready("a1")
    assert d2.agent_state("a1") is AgentState.READY
    d2.pause("a1", PauseReason.LUNCH)
    clock2.advance(31)
    d2.tick()
    assert d2.agent_state("a1") is AgentState.PAUSED


def test_zero_wrapup_goes_straight_to_ready() -> None:
    d, clock = make(wrapup_seconds=0)
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    d.enqueue(wc(clock, "c2"))
    out = answer_and_end(d, clock, o.offer_id)
    assert only_offer(out).call_id == "c2"


def test_busy_elsewhere_agents_are_not_offered() -> None:
    d, clock = make()
    add(d, "a1")
    clock.advance(1)
    add(d, "a2")
    d.busy_elsewhere("a1", "PJSIP/a1-0001")
    assert d.busy_elsewhere("a1", "PJSIP/a1-0001") == []  # replay
    assert d.agent_state("a1") is AgentState.ON_CALL
    assert only_offer(d.enqueue(wc(clock, "c1"))).agent_id == "a2"
    out = d.enqueue(wc(clock, "c2"))
    assert offers_in(out) == []
    out = d.free_elsewhere("a1", "PJSIP/a1-0001")
    assert only_offer(out).call_id == "c2"
    assert d.free_elsewhere("a1", "PJSIP/a1-0001") == []
    check_invariants(d)


def test_busy_elsewhere_while_paused_or_wrapping_up() -> None:
    d, clock = make(wrapup_seconds=5)
    add(d, "a1")
    d.pause("a1", PauseReason.TRAINING)
    d.busy_elsewhere("a1", "x")
    assert d.agent_state("a1") is AgentState.PAUSED
    d.unpause("a1")  # still on the phone: READY then at once ON_CALL
    assert d.agent_state("a1") is AgentState.ON_CALL
    d.free_elsewhere("a1", "x")
    assert d.agent_state("a1") is AgentState.READY
    # resync after an AMI reconnect replaces the set
    d.resync_elsewhere("a1", ["y", "z"])
    assert d.agent_state("a1") is AgentState.ON_CALL
    d.resync_elsewhere("a1", [])
    assert d.agent_state("a1") is AgentState.READY


# ---------------------------------------------------------------------------------------------------
# Transitions, errors, restore
# ---------------------------------------------------------------------------------------------------
def test_every_transition_is_recorded() -> None:
    d, clock = make(wrapup_seconds=5)
    add(d, "a1", login=False)
    d.login("a1", pause_reason=PauseReason.OTHER)
    d.unpause("a1")
    d.pause("a1", PauseReason.BREAK)
    d.pause("a1", PauseReason.LUNCH)
    d.ready("a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    d.on_answered(o.offer_id)
    d.on_call_ended(o.offer_id)
    clock.advance(5)
    d.tick()
    d.logout("a1")
    got = [(h.event, h.from_state.value, h.to_state.value) for h in d.take_history()]
    assert got == [
        ("login", "logged_out", "paused"),
        ("unpause", "paused", "ready"),
        ("pause", "ready", "paused"),
        ("pause", "paused", "paused"),
        ("ready", "paused", "ready"),
        ("offer_ringing", "ready", "ringing"),
        ("offer_answered", "ringing", "on_call"),
        ("call_ended", "on_call", "wrap_up"),
        ("wrapup_done", "wrap_up", "ready"),
        ("logout", "ready", "logged_out"),
    ]


@pytest.mark.parametrize(
    ("setup", "action", "fragment"),
    [
        ([], lambda d: d.ready("a1"), "cannot ready while logged_out"),
        ([], lambda d: d.logout("a1"), "cannot logout while logged_out"),
        (["login"], lambda d: d.login("a1"), "cannot login while ready"),
        (["login"], lambda d: d.unpause("a1"), "cannot unpause while ready"),
        (["login", "call"], lambda d: d.pause("a1", PauseReason.BREAK), "cannot pause while on_call"),
        (["login", "call"], lambda d: d.logout("a1"), "cannot logout while on_call"),
    ],
)
def test_illegal_transitions_raise_clear_errors(setup, action, fragment) -> None:
    d, clock = make()
    add(d, "a1", login=False)
    if "login" in setup:
        d.login("a1")
    if "call" in setup:
        d.on_answered(only_offer(d.enqueue(wc(clock, "c1"))).offer_id)
    before = d.agent_state("a1")
    with pytest.raises(IllegalTransition, match=fragment):
        action(d)
    assert d.agent_state("a1") is before


def test_bad_input_is_rejected_clearly() -> None:
    d, clock = make()
    with pytest.raises(UnknownAgent):
        d.login("ghost")
    with pytest.raises(UnknownCall):
        d.withdraw("nope", WithdrawReason.ABANDONED)
    with pytest.raises(UnknownOffer):
        d.on_answered("nope#1")
    with pytest.raises(ValueError, match="interface"):
        Agent("x", "X", "x", "PJSIP/8001&PJSIP/8002")
    with pytest.raises(ValueError, match="interface"):
        Agent("x", "X", "x", "PJSIP/80 01")
    with pytest.raises(ValueError, match="skill"):
        Agent("x", "X", "x", "SIP/8001", frozenset({"Repair Team"}))
    with pytest.raises(ValueError, match="aware"):
        WaitingCall("c", "u", None, None, None, None, L.NORMAL, datetime(2026, 1, 1))
    add(d, "a1")
    d.enqueue(wc(clock, "c1"))
    with pytest.raises(DuplicateCall):
        d.enqueue(wc(clock, "c1"))


def test_caller_display_is_sanitised() -> None:
    d, clock = make()
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1", caller_name='Zhang "San"\r\nAction: Originate', unit="3-201")))
    assert o.caller_display == "Zhang SanAction: Originate 3-201"
    assert not any(ch in o.caller_display for ch in '"\r\n<>;|&')


def test_restore_after_restart() -> None:
    clock = FakeClock()
    d = Distributor(ACDConfig(wrapup_seconds=20), clock)
    for aid in ("ready_old", "ready_new", "paused", "wrapping", "talking", "ringing", "out"):
        d.add_agent(Agent(aid, aid, aid, f"SIP/{aid}"))
    now = clock.now()
    d.restore("ready_new", AgentState.READY, now - timedelta(seconds=10))
    d.restore("ready_old", AgentState.READY, now - timedelta(seconds=100))
    d.restore("paused", AgentState.PAUSED, now - timedelta(seconds=60), PauseReason.LUNCH)
    d.restore("wrapping", AgentState.WRAP_UP, now - timedelta(seconds=15))
    d.restore("talking", AgentState.ON_CALL, now - timedelta(seconds=30))
    d.restore("ringing", AgentState.RINGING, now - timedelta(seconds=2))
    d.restore("out", AgentState.LOGGED_OUT, now)
    assert d.take_history() == []
    states = {a.agent_id: (a.state, a.pause_reason) for a in d.snapshot().agents}
    assert states["paused"] == (AgentState.PAUSED, PauseReason.LUNCH)
    assert states["talking"][0] is AgentState.ON_CALL and states["ringing"][0] is AgentState.READY
    assert states["out"][0] is AgentState.LOGGED_OUT
    assert d.snapshot().agents[4].seconds_in_state == pytest.approx(30)
    # idle order survives: the agent READY for 100 s is first
    assert only_offer(d.enqueue(wc(clock, "c1"))).agent_id == "ready_old"
    assert only_offer(d.enqueue(wc(clock, "c2"))).agent_id == "ready_new"
    assert only_offer(d.enqueue(wc(clock, "c3"))).agent_id == "ringing"
    d.enqueue(wc(clock, "c4"))
    clock.advance(5)  # wrap-up had 5 s left
    assert only_offer(d.tick()).agent_id == "wrapping"
    d.enqueue(wc(clock, "c5"))
    assert only_offer(d.resync_elsewhere("talking", [])).agent_id == "talking"
    with pytest.raises(Exception, match="restore only before"):
        d.restore("talking", AgentState.READY, now)


# ---------------------------------------------------------------------------------------------------
# Waiting: announcements, max wait, call-backs, nobody there
# ---------------------------------------------------------------------------------------------------
def test_announcements_and_max_wait() -> None:
    d, clock = make(announce_every_seconds=30, max_wait_seconds=60)
    add(d, "a1")
    first = only_offer(d.enqueue(wc(clock, "c1")))
    d.on_answered(first.offer_id)
    d.enqueue(wc(clock, "c2"))
    clock.advance(30)
    out = d.tick()
    assert out == [Announce("c2", "u-c2", 1, pytest.approx(90.0))]  # nothing handled yet: 180 s × 0.5
    clock.advance(30)
    out = d.tick()
    assert MaxWaitReached("c2", "u-c2", 60.0) in out and any(isinstance(x, Announce) for x in out)
    res = d.withdraw("c2", WithdrawReason.MAX_WAIT)
    assert not res.already_withdrawn
    snap = d.metrics_snapshot()
    assert snap.calls_deflected == 1 and snap.calls_abandoned == 0
    clock.advance(120)
    assert d.tick() == []


def test_callback_keeps_its_place_and_is_flagged() -> None:
    d, clock = make(announce_every_seconds=30)
    add(d, "a1")
    busy = only_offer(d.enqueue(wc(clock, "busy")))
    d.on_answered(busy.offer_id)
    d.enqueue(wc(clock, "c1"))
    d.enqueue(wc(clock, "c2"))
    assert d.request_callback("c1") == 1
    clock.advance(30)
    assert [x.call_id for x in d.tick() if isinstance(x, Announce)] == ["c2"]  # the call-back is silent
    snap = d.snapshot()
    assert snap.queue[0].call_id == "c1" and snap.queue[0].callback
    d.on_call_ended(busy.offer_id)
    o = only_offer(d.ready("a1"))
    assert o.call_id == "c1" and o.callback


def test_callback_offer_carries_the_flag() -> None:
    d, clock = make()
    add(d, "a1", login=False)
    d.enqueue(wc(clock, "c1"))
    d.request_callback("c1")
    o = only_offer(d.login("a1"))
    assert o.callback and o.call_id == "c1"


def test_no_agents_and_night_service() -> None:
    d, clock = make()
    out = d.enqueue(wc(clock, "c1"))
    assert out == [NoAgentAvailable("c1", "u-c1", "no_agents")]
    # closed: Monday-Friday 09:00-18:00 local; FakeClock starts Tue 2026-11-24 02:00 UTC = 10:00 Shanghai
    hours = BusinessHours(days=[0, 1, 2, 3, 4], open="09:00", close="18:00")
    clock2 = FakeClock(datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc))  # 22:00 local
    d2 = Distributor(ACDConfig(business_hours=hours, on_duty_interface="PJSIP/duty"), clock2)
    out = d2.enqueue(wc(clock2, "e1", L.EMERGENCY))
    # Only the on-duty phone: a "closed" decision first made the caller leave a message instead.
    assert out == [RingOnDuty("e1", "u-e1", "PJSIP/duty")]
    assert d2.enqueue(wc(clock2, "n1")) == [NoAgentAvailable("n1", "u-n1", "closed")]  # not an emergency
    d3 = Distributor(ACDConfig(business_hours=hours), clock2)  # no on-duty phone configured
    assert d3.enqueue(wc(clock2, "e2", L.EMERGENCY)) == [NoAgentAvailable("e2", "u-e2", "closed")]


def test_business_hours_and_priority_helpers() -> None:
    hours = BusinessHours(days=[0, 1, 2, 3, 4], open="09:00", close="18:00")
    tz = "Asia/Shanghai"
    assert business_hours_open(hours, tz, datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc))  # Tue 10:00
    assert not business_hours_open(hours, tz, datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc))  # 18:00
    assert not business_hours_open(hours, tz, datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc))  # Saturday
    night = BusinessHours(days=[4], open="22:00", close="06:00")  # Friday night into Saturday
    assert business_hours_open(night, tz, datetime(2026, 11, 27, 14, 30, tzinfo=timezone.utc))  # Fri 22:30
    assert business_hours_open(night, tz, datetime(2026, 11, 27, 21, 0, tzinfo=timezone.utc))  # Sat 05:00
    assert not business_hours_open(night, tz, datetime(2026, 11, 28, 21, 0, tzinfo=timezone.utc))  # Sun 05:00
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    kw = dict(now=now, repeat_caller_hours=24)
    assert classify_priority(emergency=True, vip=True, last_call_at=None, **kw) is L.EMERGENCY
    assert (
        classify_priority(emergency=False, vip=True, last_call_at=now - timedelta(hours=23), **kw) is L.REPEAT
    )
    assert classify_priority(emergency=False, vip=True, last_call_at=now - timedelta(hours=25), **kw) is L.VIP
    assert classify_priority(emergency=False, vip=False, last_call_at=None, **kw) is L.NORMAL


def test_expected_wait_uses_recent_handle_time() -> None:
    d, clock = make(wrapup_seconds=10)
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    answer_and_end(d, clock, o.offer_id, ring=1, talk=50)  # handle time 60 s
    d.enqueue(wc(clock, "c2"))
    d.enqueue(wc(clock, "c3"))
    assert d.expected_wait("c2") == pytest.approx(30.0)
    assert d.expected_wait("c3") == pytest.approx(90.0)
    clock.advance(10)
    assert only_offer(d.tick()).call_id == "c2"
    assert d.position("c3") == 2 and d.expected_wait("c3") == pytest.approx(90.0)


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------
def test_ring_count_formula() -> None:
    m = AcdMetrics(2, 5.0, "Asia/Shanghai")
    assert [m.rings(s) for s in (0, 0.5, 5.0, 5.001, 10.0, 10.0004, 10.01)] == [0, 1, 1, 2, 2, 2, 3]
    assert percentile([5, 1, 4, 2, 3, 6, 7, 8, 9, 10], 90) == 9
    assert percentile([], 90) is None


def test_metrics_with_known_inputs() -> None:
    d, clock = make(wrapup_seconds=0, missed_offers_before_pause=9)
    add(d, "a1")
    # speeds of answer 1..9 s and one at 14 s (the first offer missed after 10 s, then 4 s)
    for i, soa in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9], start=1):
        o = only_offer(d.enqueue(wc(clock, f"c{i}")))
        d.on_ringing(o.offer_id)
        clock.advance(soa)
        out = d.on_answered(o.offer_id)
        assert not any(isinstance(x, Alert) for x in out)
        d.on_call_ended(o.offer_id)
    o = only_offer(d.enqueue(wc(clock, "late")))
    d.on_ringing(o.offer_id)
    clock.advance(10)
    o2 = only_offer(d.on_ring_timeout(o.offer_id))
    d.on_ringing(o2.offer_id)
    clock.advance(4)
    out = d.on_answered(o2.offer_id)
    late = [x for x in out if isinstance(x, Alert)]
    assert [a.kind for a in late] == [AlertKind.CALL_ANSWERED_LATE]
    d.on_call_ended(o2.offer_id)
    # two abandons
    d.pause("a1", PauseReason.BREAK)
    for cid in ("x1", "x2"):
        d.enqueue(wc(clock, cid))
    clock.advance(20)
    d.withdraw("x1", WithdrawReason.ABANDONED)
    d.withdraw("x2", WithdrawReason.ABANDONED)
    m = d.metrics_snapshot()
    assert m.calls_entered == 12 and m.calls_answered == 10 and m.calls_abandoned == 2
    assert m.calls_answered_within_target == 9 and m.call_two_ring_share == pytest.approx(0.9)
    assert m.offers == 11 and m.offers_answered_within_target == 10
    assert m.offer_two_ring_share == pytest.approx(10 / 11)
    assert m.avg_speed_of_answer == pytest.approx((45 + 14) / 10)
    assert m.p90_speed_of_answer == pytest.approx(9)
    assert m.abandon_rate == pytest.approx(2 / 12)
    assert m.avg_abandon_wait == pytest.approx(20)
    assert m.breaches == 1
    assert m.to_dict()["day"] == "2026-11-24"


def test_offer_answered_after_three_rings_is_a_breach() -> None:
    d, clock = make()
    add(d, "slow")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    d.on_ringing(o.offer_id)
    clock.advance(11)
    out = d.on_answered(o.offer_id)  # Asterisk let it ring too long: measured and alerted
    kinds = sorted(a.kind.value for a in out if isinstance(a, Alert))
    assert kinds == ["call_answered_late", "offer_rang_too_long"]
    assert d.metrics_snapshot().offer_two_ring_share == 0.0


def test_live_figures_longest_current_wait() -> None:
    d, clock = make()
    d.enqueue(wc(clock, "c1"))
    clock.advance(7)
    d.enqueue(wc(clock, "c2"))
    clock.advance(3)
    m = d.metrics_snapshot()
    assert m.waiting_now == 2 and m.longest_current_wait == pytest.approx(10)


def test_replayed_events_are_not_counted_twice() -> None:
    d, clock = make(wrapup_seconds=0)
    add(d, "a1")
    o = only_offer(d.enqueue(wc(clock, "c1")))
    d.on_ringing(o.offer_id)
    clock.advance(3)
    d.on_answered(o.offer_id)
    before = d.metrics_snapshot()
    # AMI reconnect replays DialBegin/DialEnd/Hangup
    assert d.on_ringing(o.offer_id) == []
    assert d.on_answered(o.offer_id) == []
    d.on_call_ended(o.offer_id)
    assert d.on_call_ended(o.offer_id) == []
    assert d.on_answered(o.offer_id) == []
    assert d.on_ring_timeout(o.offer_id) == []
    assert d.on_offer_failed(o.offer_id, "NOANSWER") == []
    assert d.withdraw("c1", WithdrawReason.ABANDONED).already_withdrawn
    after = d.metrics_snapshot()
    assert after == before
    assert after.calls_answered == 1 and after.offers == 1 and after.calls_abandoned == 0
    assert d.snapshot().agents[0].answered_today == 1
    # the metrics object itself is idempotent too
    m = AcdMetrics(2, 5.0, "Asia/Shanghai")
    t = clock.now()
    for _ in range(3):
        m.call_entered("x", t)
        m.offer_closed("x#1", "a", t, t, t + timedelta(seconds=2), True)
        m.call_answered("x", t, t + timedelta(seconds=2), "a")
        m.call_abandoned("x", t, t + timedelta(seconds=5))
    s = m.snapshot(m.local_day(t))
    assert (s.calls_entered, s.calls_answered, s.calls_abandoned, s.offers) == (1, 1, 0, 1)


def test_days_are_local() -> None:
    m = AcdMetrics(2, 5.0, "Asia/Shanghai")
    late_utc = datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc)  # 01:00 on the 25th in Shanghai
    m.call_entered("c", late_utc)
    assert [x.isoformat() for x in m.days()] == ["2026-11-25"]


def test_past_days_keep_their_figures_but_drop_their_once_keys() -> None:
    """A day's "counted once" keys grow with every call; kept for 31 days they held memory for
    nothing. Yesterday keeps them (a call may span midnight); older days keep only their figures."""
    m = AcdMetrics(2, 5.0, "UTC")
    first = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    for n in range(3):
        m.call_entered(f"c{n}", first)
    m.call_entered("d1", first + timedelta(days=1))
    m.call_entered("c0", first)  # a repeat for the 20th, still remembered: not counted twice
    assert m.snapshot(first.date()).to_dict()["calls_entered"] == 3
    m.call_entered("d2", first + timedelta(days=2))  # the 22nd: the 20th is now two days back
    assert m.snapshot(first.date()).to_dict()["calls_entered"] == 3  # figures kept
    assert not m._days[first.date()].counted and m._days[(first + timedelta(days=1)).date()].counted


def test_a_missed_offer_goes_to_the_next_agent_when_the_first_is_now_busy_elsewhere() -> None:
    """Found by the state-machine test: the agent's phone went onto a call we did not route while
    our offer rang; at the ring timeout the caller was re-queued but not offered to the ready agent."""
    d, clock = make()
    add(d, "a1")
    add(d, "a2")
    o1 = only_offer(d.enqueue(wc(clock, "c1")))
    assert o1.agent_id == "a1"
    assert d.busy_elsewhere("a1", "x") == []
    o2 = only_offer(d.on_ring_timeout(o1.offer_id))
    assert o2.agent_id == "a2" and o2.call_id == "c1"
    assert d.agent_state("a1") is AgentState.ON_CALL
    check_invariants(d)


def test_late_answer_after_timeout_is_accepted() -> None:
    d, clock = make(missed_offers_before_pause=5)
    add(d, "a1")
    add(d, "a2")
    o1 = only_offer(d.enqueue(wc(clock, "c1")))
    o2 = only_offer(d.on_ring_timeout(o1.offer_id))
    assert o2.agent_id == "a2"
    out = d.on_answered(o1.offer_id)  # a1 picked up just as we gave up
    assert [x.offer_id for x in out if isinstance(x, CancelOffer)] == [o2.offer_id]
    assert d.agent_state("a1") is AgentState.ON_CALL and d.agent_state("a2") is AgentState.READY
    assert d.waiting_count() == 0
    d.on_call_ended(o1.offer_id)
    assert d.agent_state("a1") is AgentState.WRAP_UP


# ---------------------------------------------------------------------------------------------------
# Property: the invariant holds under any sequence of events
# ---------------------------------------------------------------------------------------------------
AGENTS = ["a0", "a1", "a2", "a3"]
SKILLS = [None, "repair", "fees"]
LANGS = [None, "zh", "en"]


class DistributorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.d = Distributor(ACDConfig(wrapup_seconds=3, missed_offers_before_pause=2), self.clock)
        for i, aid in enumerate(AGENTS):
            self.d.add_agent(
                Agent(
                    aid,
                    aid,
                    aid,
                    f"PJSIP/{aid}",
                    frozenset(SKILLS[1:][i % 2 :]),
                    frozenset(LANGS[1:][: i % 2 + 1]),
                )
            )
        self.n = 0

    def _open_offers(self) -> list[str]:
        return [a.current_call_id for a in self.d.snapshot().agents if a.state is AgentState.RINGING]

    def _offer_of(self, agent_id: str) -> str | None:
        rec = self.d._agents[agent_id]  # test-only peek at the offer id
        return rec.offer_id

    @rule(level=st.sampled_from(list(L)), skill=st.sampled_from(SKILLS), lang=st.sampled_from(LANGS))
    def enqueue(self, level, skill, lang) -> None:
        self.n += 1
        self.d.enqueue(wc(self.clock, f"c{self.n}", level, skill, lang, prev=AGENTS[self.n % 4]))

    @rule(aid=st.sampled_from(AGENTS))
    def make_ready(self, aid) -> None:
        try:
            self.d.agent_ready(aid)
        except IllegalTransition:
            pass

    @rule(aid=st.sampled_from(AGENTS), reason=st.sampled_from(list(PauseReason)))
    def pause(self, aid, reason) -> None:
        try:
            self.d.pause(aid, reason)
        except IllegalTransition:
            pass

    @rule(aid=st.sampled_from(AGENTS))
    def logout(self, aid) -> None:
        try:
            self.d.logout(aid)
        except IllegalTransition:
            pass

    @rule(
        aid=st.sampled_from(AGENTS), what=st.sampled_from(["answer", "timeout", "busy", "unavail", "cancel"])
    )
    def offer_event(self, aid, what) -> None:
        oid = self._offer_of(aid)
        if oid is None:
            return
        if what == "answer":
            if self.d.agent_state(aid) is AgentState.RINGING:
                self.d.on_answered(oid)
            else:
                self.d.on_call_ended(oid)
        elif what == "timeout":
            self.d.on_ring_timeout(oid)
        elif what == "cancel":
            self.d.on_offer_failed(oid, "CANCEL")
        else:
            self.d.on_offer_failed(oid, "BUSY" if what == "busy" else "CHANUNAVAIL")

    @rule(aid=st.sampled_from(AGENTS), ref=st.sampled_from(["x", "y"]), busy=st.booleans())
    def elsewhere(self, aid, ref, busy) -> None:
        (self.d.busy_elsewhere if busy else self.d.free_elsewhere)(aid, ref)

    @rule(data=st.data())
    def abandon(self, data) -> None:
        calls = [q.call_id for q in self.d.snapshot().queue]
        if calls:
            self.d.withdraw(data.draw(st.sampled_from(calls)), WithdrawReason.ABANDONED)

    @rule(seconds=st.floats(0.5, 20))
    def time_passes(self, seconds) -> None:
        self.clock.advance(seconds)
        for dec in self.d.tick():
            if isinstance(dec, MaxWaitReached):
                self.d.withdraw(dec.call_id, WithdrawReason.MAX_WAIT)

    @invariant()
    def no_idle_agent_while_callers_wait(self) -> None:
        check_invariants(self.d)

    @invariant()
    def counts_match_brute_force(self) -> None:
        snap = self.d.snapshot()
        ready = sum(1 for a in snap.agents if a.state is AgentState.READY and not a.busy_elsewhere)
        assert self.d.ready_count() == ready
        staffed = sum(1 for a in snap.agents if a.state not in (AgentState.LOGGED_OUT, AgentState.PAUSED))
        assert self.d.staffed_count() == staffed
        m = self.d.metrics_snapshot()
        assert m.offers_answered + m.offers_missed == m.offers
        assert m.calls_answered + m.calls_abandoned + m.calls_deflected + len(snap.queue) == m.calls_entered


TestDistributorMachine = DistributorMachine.TestCase
TestDistributorMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
