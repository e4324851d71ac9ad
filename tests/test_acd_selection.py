"""Agent selection on its own (callcentre/domain/acd/selection.py): the rules in order, where a new rule
goes, and that a new rule keeps the indexes' O(log n) shape (the search looks at index slots, never at
every agent). The distributor's use of it is tested in test_acd_domain.py."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from callcentre.domain.acd import Agent, PriorityLevel, WaitingCall
from callcentre.domain.acd.model import AgentRecord, AgentState, CallRecord
from callcentre.domain.acd.selection import (
    DIMENSIONS,
    PREFERENCES,
    AgentSelector,
    MatchDimension,
    agent_order,
    tier_masks,
)

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


class Board:
    """Agent and call records as the distributor keeps them, indexed by a selector."""

    def __init__(self, **kw) -> None:
        self.agents: dict[str, AgentRecord] = {}
        self.calls: dict[str, CallRecord] = {}
        self.sel = AgentSelector(self.agents, self.calls, prefer_previous_agent=kw.pop("prefer_previous_agent", True), **kw)
        self._seq = itertools.count()

    def ready(self, agent_id: str, skills=(), langs=(), idle_since: float = 0.0, **kw) -> AgentRecord:
        rec = AgentRecord(Agent(agent_id, agent_id, agent_id, f"PJSIP/{agent_id}", frozenset(skills), frozenset(langs), **kw),
                          next(self._seq), state=AgentState.READY, idle_since=idle_since)
        self.sel.prepare_agent(rec)
        self.agents[agent_id] = rec
        self.sel.index_agent(rec)
        return rec

    def wait(self, call_id: str, level=PriorityLevel.NORMAL, skill=None, lang=None, prev=None, **kw) -> CallRecord:
        call = WaitingCall(call_id, call_id, "13800138000", None, lang, skill, level, T0, prev)
        crec = CallRecord(call, next(self._seq), 0.0, **kw)
        self.sel.prepare_call(crec)
        self.calls[call_id] = crec
        self.sel.index_call(crec)
        return crec

    def agent_for(self, crec: CallRecord) -> str | None:
        found = self.sel.pick_agent_for(crec)
        return found.agent.agent_id if found else None

    def call_for(self, agent_id: str) -> str | None:
        found = self.sel.pick_call_for(self.agents[agent_id])
        return found.call.call_id if found else None


def test_tiers_drop_the_least_important_dimension_first() -> None:
    assert tier_masks(2) == ((True, True), (True, False), (False, True), (False, False))
    masks = tier_masks(3)
    # a more important dimension kept beats any combination of less important ones
    assert masks.index((True, False, False)) < masks.index((False, True, True))
    assert len(masks) == len(set(masks)) == 8 and masks[0] == (True,) * 3 and masks[-1] == (False,) * 3
    assert [d.name for d in DIMENSIONS] == ["language", "skill"]


def test_a_call_gets_language_and_skill_then_language_then_skill_then_anyone() -> None:
    b = Board()
    b.ready("zh_fees", {"fees"}, {"zh"}, idle_since=1)
    b.ready("en_fees", {"fees"}, {"en"}, idle_since=2)
    b.ready("zh_repair", {"repair"}, {"zh"}, idle_since=3)
    assert b.agent_for(b.wait("c1", skill="repair", lang="zh")) == "zh_repair"
    assert b.agent_for(b.wait("c2", skill="repair", lang="en")) == "en_fees"  # language over skill
    assert b.agent_for(b.wait("c3", skill="repair", lang="fr")) == "zh_repair"  # skill when nobody speaks it
    assert b.agent_for(b.wait("c4", skill="lift", lang="fr")) == "zh_fees"  # anyone: idle longest


def test_idle_longest_then_registration_order() -> None:
    b = Board()
    b.ready("late", idle_since=5.0)
    b.ready("first", idle_since=1.0)
    b.ready("tie", idle_since=1.0)
    assert b.agent_for(b.wait("c1")) == "first"
    assert agent_order(b.agents["first"]) < agent_order(b.agents["tie"]) < agent_order(b.agents["late"])


def test_the_previous_agent_within_the_best_tier_only() -> None:
    b = Board()
    b.ready("idle", {"repair"}, {"zh"}, idle_since=1)
    b.ready("prev_en", {"repair"}, {"en"}, idle_since=9)
    # previous agent is preferred over the longest idle, but not over a better language match
    assert b.agent_for(b.wait("c1", lang="en", prev="prev_en")) == "prev_en"
    assert b.agent_for(b.wait("c2", lang="zh", prev="prev_en")) == "idle"
    off = Board(prefer_previous_agent=False)
    off.ready("idle", idle_since=1)
    off.ready("prev", idle_since=9)
    assert off.agent_for(off.wait("c1", prev="prev")) == "idle"


@pytest.mark.parametrize("level, expected", [
    (PriorityLevel.VIP, "vip"), (PriorityLevel.EMERGENCY, "senior"), (PriorityLevel.REPEAT, "senior"),
    (PriorityLevel.NORMAL, "plain"),
])
def test_preferences_by_priority_level(level, expected) -> None:
    b = Board()
    b.ready("plain", idle_since=1)
    b.ready("vip", idle_since=2, vip_capable=True)
    b.ready("senior", idle_since=3, senior=True)
    assert b.agent_for(b.wait("c1", level=level)) == expected
    assert {p.name for p in PREFERENCES} == {"vip", "senior"}


def test_an_agent_who_missed_the_call_gets_it_again_only_when_nobody_else_is_ready() -> None:
    b = Board()
    b.ready("missed", idle_since=1)
    b.ready("other", idle_since=2)
    assert b.agent_for(b.wait("c1", missed_by={"missed"})) == "other"
    b.sel.unindex_agent(b.agents["other"])
    assert b.agent_for(b.calls["c1"]) == "missed"


def test_a_freed_agent_takes_the_top_level_then_the_best_match_then_the_oldest() -> None:
    b = Board()
    b.wait("old_zh", lang="zh")
    b.wait("en_normal", lang="en")
    b.wait("vip_zh", level=PriorityLevel.VIP, lang="zh")
    b.wait("vip_en_repair", level=PriorityLevel.VIP, skill="repair", lang="en")
    b.ready("en_repair", {"repair"}, {"en"})
    assert b.call_for("en_repair") == "vip_en_repair"
    b.sel.unindex_call(b.calls["vip_en_repair"])
    assert b.call_for("en_repair") == "vip_zh"  # the top level first, even in a language the agent lacks
    b.sel.unindex_call(b.calls["vip_zh"])
    assert b.call_for("en_repair") == "en_normal"  # a language match beats an older call
    b.ready("zh", (), {"zh"})
    assert b.call_for("zh") == "old_zh"
    # a call that asks for nothing matches every agent on every dimension: the oldest such call wins
    b.wait("any_old", level=PriorityLevel.VIP)
    b.wait("vip_en_repair2", level=PriorityLevel.VIP, skill="repair", lang="en")
    assert b.call_for("en_repair") == "any_old"


def test_counts_and_the_head_of_the_queue() -> None:
    b = Board()
    assert b.sel.ready_count() == 0 and b.sel.unoffered_count() == 0 and b.sel.head_call() is None
    b.wait("n1")
    b.wait("e1", level=PriorityLevel.EMERGENCY)
    b.ready("a1")
    assert b.sel.ready_count() == 1 and b.sel.unoffered_count() == 2
    assert b.sel.head_call().call.call_id == "e1"
    b.sel.unindex_call(b.calls["e1"])
    b.sel.unindex_agent(b.agents["a1"])
    assert b.sel.ready_count() == 0 and b.sel.unoffered_count() == 1


def test_a_new_rule_is_one_dimension_and_keeps_the_search_to_index_slots() -> None:
    """An estate (which property the caller lives in) as a new way an agent suits a call, ranked between
    language and skill: one MatchDimension, no change to the selector."""
    estates = {"a_east": {"east"}, "b_west": {"west"}}
    estate_of_call = {"c_west": "west"}
    estate = MatchDimension("estate", lambda a: frozenset(estates.get(a.agent_id, ())),
                            lambda c: estate_of_call.get(c.call_id))
    b = Board(dimensions=(DIMENSIONS[0], estate, DIMENSIONS[1]))
    b.ready("a_east", {"repair"}, {"zh"}, idle_since=1)
    b.ready("b_west", {"fees"}, {"zh"}, idle_since=2)
    # the estate ranks above the skill: the west agent, though the east one has the skill and idles longer
    assert b.agent_for(b.wait("c_west", skill="repair", lang="zh")) == "b_west"
    assert b.call_for("b_west") == "c_west"
    # each agent sits in one slot per combination of its values (plus "any"), per preference: bounded by
    # the agent's own skills and languages, not by the number of agents or callers
    assert len(b.agents["a_east"].keys) == 2 * 2 * 2
    assert len(b.calls["c_west"].keys) == len(tier_masks(3)) == 8


def test_calls_that_ask_for_the_same_share_their_index_slots() -> None:
    b = Board()
    one, two = b.wait("c1", skill="repair", lang="zh"), b.wait("c2", skill="repair", lang="zh")
    other = b.wait("c3", skill="repair", lang="zh", level=PriorityLevel.VIP)
    assert one.keys is two.keys and one.agent_tiers is two.agent_tiers  # no tuples per caller
    assert other.keys is not one.keys and other.keys[0][0] == int(PriorityLevel.VIP)
