"""Agent selection: which READY agent a waiting call gets, and which waiting call a freed agent takes.

The rules, deterministic and in this order (this module is their one place):

1. **Priority** of the waiting call (:class:`~.model.PriorityLevel`: EMERGENCY > REPEAT > VIP > NORMAL),
   first come, first served within a level. A call keeps its place while it rings an agent, after a
   missed offer and when it becomes a call-back request.
2. **Match dimensions** (:data:`DIMENSIONS`, most important first: the caller's language, then the
   IVR skill). A call looks for an agent in tiers, first non-empty wins: every dimension matched,
   then dropping the least important first (language and skill; language only; skill only), then
   **any ready agent** (a caller never waits while an agent idles). A call without a requirement on
   a dimension matches every agent on it. Language ranks above skill: an agent who speaks the
   caller's language can at least take the request down.
3. Within the tier, the caller's **previous agent** if READY (``prefer_previous_agent``).
4. Then the **preferences** (:data:`PREFERENCES`): a VIP call gets the longest-idle ``vip_capable``
   agent of the tier, an EMERGENCY or REPEAT call the longest-idle ``senior`` one.
5. Then the agent **idle longest** (:func:`agent_order`: READY the longest, ties by registration).
   An agent who missed an offer goes to the back (idle since the miss) and is not offered the same
   call again while any other agent is ready.

When an agent becomes free while callers wait, the agent takes the highest priority level waiting;
within it the call best matching the agent (the same tiers), oldest first.

**Transferred calls** (``WaitingCall.only``: one agent, or a skill group) are outside these rules'
indexes: they are offered only to their target (a skill group keeps the skill dimension in every
tier, the other rules apply within it), never twice to the same agent, and before the queue's calls
(:meth:`AgentSelector.targeted_in_order`). There are few at a time, so they are looked at one by one.

Where a new rule goes
---------------------
* a new way an agent can suit a call (an estate, a product line): one :class:`MatchDimension` in
  :data:`DIMENSIONS`, at its rank;
* a kind of caller who should get a kind of agent first: one :class:`Preference` in :data:`PREFERENCES`;
* a different order among equally suitable agents (fewest calls today, ...): :func:`agent_order`
  (it must not change while the agent stays READY: it is the heap key);
* a new priority level: :class:`~.model.PriorityLevel` and :func:`~.model.classify_priority`.

Cost: READY agents sit in one heap per index slot (a value or "any" per dimension, plus a
preference), ordered by :func:`agent_order`; waiting calls not ringing anyone sit in one heap per
(level, value or "none" or "any" per dimension), ordered by arrival. Entries are deleted lazily (a
token per entry), so a decision costs O(log n) per slot looked at, never a scan of all agents; the
number of slots looked at depends on the dimensions, not on how many agents or callers there are.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping

from callcentre.domain.acd.model import Agent, AgentRecord, CallRecord, PriorityLevel, WaitingCall

ANY = "*"  # index slot: "whatever the agent/call has"
NONE = ""  # index slot: the call states no requirement on this dimension
NO_PREFERENCE = ""
_SHAPES_KEPT = 4096  # distinct (level, language, skill) combinations remembered


@dataclass(frozen=True, slots=True)
class MatchDimension:
    """One way an agent can suit a call: the call asks for one value (or none), the agent has a set."""

    name: str
    agent_values: Callable[[Agent], frozenset[str]]
    call_value: Callable[[WaitingCall], str | None]


@dataclass(frozen=True, slots=True)
class Preference:
    """Calls of these levels get an agent who has this quality first, within the matching tier."""

    name: str
    agent_has: Callable[[Agent], bool]
    levels: frozenset[PriorityLevel]


# Most important first: the search drops the least important dimension first.
DIMENSIONS: tuple[MatchDimension, ...] = (
    MatchDimension("language", lambda a: a.languages, lambda c: c.language),
    MatchDimension("skill", lambda a: a.skills, lambda c: c.required_skill),
)

PREFERENCES: tuple[Preference, ...] = (
    Preference("vip", lambda a: a.vip_capable, frozenset({PriorityLevel.VIP})),
    Preference("senior", lambda a: a.senior, frozenset({PriorityLevel.EMERGENCY, PriorityLevel.REPEAT})),
)


def agent_order(rec: AgentRecord) -> tuple[float, int]:
    """Among equally suitable READY agents, the first in this order gets the call: idle longest."""
    return (rec.idle_since, rec.seq)


def tier_masks(n: int) -> tuple[tuple[bool, ...], ...]:
    """Which dimensions each tier keeps, best tier first: a more important dimension kept beats any
    combination of less important ones (for language, skill: both; language; skill; neither)."""
    return tuple(tuple(bool(m >> (n - 1 - i) & 1) for i in range(n)) for m in range((1 << n) - 1, -1, -1))


class LazyIndex:
    """Heaps per key with lazy deletion, shared by the ready agents and the waiting calls.

    An entry is a tuple ordered by its leading fields and ending in (…, id, token); it is live while
    ``is_live(entry)`` says so (the record is still indexed with that token). Counts per key are exact,
    stale entries are dropped when met at the top, and a heap is compacted once it holds more than four
    times its live entries, so a decision stays O(log n) without ever scanning every record.
    """

    __slots__ = ("_heaps", "_counts", "_is_live")

    def __init__(self, is_live: Callable[[tuple], bool]) -> None:
        self._heaps: dict[tuple, list[tuple]] = {}
        self._counts: dict[tuple, int] = {}
        self._is_live = is_live

    def add(self, keys: Iterable[tuple], entry: tuple) -> None:
        for key in keys:
            heap = self._heaps.setdefault(key, [])
            heapq.heappush(heap, entry)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if len(heap) > 64 and len(heap) > 4 * count:
                live = [e for e in heap if self._is_live(e)]
                heapq.heapify(live)
                self._heaps[key] = live

    def remove(self, keys: Iterable[tuple]) -> None:
        """The record left the index (its token changed): only the count moves now."""
        for key in keys:
            self._counts[key] -= 1

    def count(self, key: tuple) -> int:
        return self._counts.get(key, 0)

    def peek(self, key: tuple, skip: Callable[[tuple], bool] | None = None) -> tuple | None:
        """The first live entry under ``key`` that ``skip`` does not reject (skipped ones stay)."""
        if not self._counts.get(key):
            return None
        heap = self._heaps[key]
        skipped: list[tuple] = []
        found: tuple | None = None
        while heap:
            e = heap[0]
            if not self._is_live(e):
                heapq.heappop(heap)
                continue
            if skip is not None and skip(e):
                skipped.append(heapq.heappop(heap))
                continue
            found = e
            break
        for e in skipped:
            heapq.heappush(heap, e)
        return found


class AgentSelector:
    """The rules of the module docstring over the distributor's records (which it reads, never owns).

    The distributor tells it when an agent becomes READY or stops being READY (:meth:`index_agent`,
    :meth:`unindex_agent`) and when a call waits unoffered or stops waiting (:meth:`index_call`,
    :meth:`unindex_call`); it answers :meth:`pick_agent_for` and :meth:`pick_call_for`.
    """

    def __init__(
        self,
        agents: Mapping[str, AgentRecord],
        calls: Mapping[str, CallRecord],
        *,
        prefer_previous_agent: bool,
        dimensions: tuple[MatchDimension, ...] = DIMENSIONS,
        preferences: tuple[Preference, ...] = PREFERENCES,
    ) -> None:
        self._agents = agents
        self._calls = calls
        self.prefer_previous_agent = prefer_previous_agent
        self.dimensions = dimensions
        self.preferences = preferences
        self._masks = tier_masks(len(dimensions))
        self._any = (ANY,) * len(dimensions)
        self._levels_desc = tuple(int(lvl) for lvl in sorted(PriorityLevel, reverse=True))
        self._prefs_by_level: dict[PriorityLevel, tuple[str, ...]] = {
            lvl: tuple(p.name for p in preferences if lvl in p.levels) for lvl in PriorityLevel
        }
        self._agent_index = LazyIndex(self._agent_entry_live)
        self._call_index = LazyIndex(self._call_entry_live)
        self._call_shapes: dict[tuple, tuple[tuple, tuple]] = {}
        self._targeted: dict[str, CallRecord] = {}  # transferred calls waiting unoffered, by call id
        names = [d.name for d in dimensions]
        self._skill_dim = names.index("skill") if "skill" in names else None

    # ----- agents ---------------------------------------------------------------------------------
    def prepare_agent(self, rec: AgentRecord) -> None:
        """Work out, once per agent record or change, where the agent sits and where it looks."""
        agent = rec.agent
        values = [tuple(sorted(d.agent_values(agent))) for d in self.dimensions]
        prefs = (NO_PREFERENCE, *(p.name for p in self.preferences if p.agent_has(agent)))
        rec.keys = tuple(
            (*slot, pref) for slot in itertools.product(*[(*v, ANY) for v in values]) for pref in prefs
        )
        rec.call_tiers = tuple(
            tuple(itertools.product(*[((*v, NONE) if keep else (ANY,)) for v, keep in zip(values, mask, strict=True)]))
            for mask in self._masks
        )

    def index_agent(self, rec: AgentRecord) -> None:
        if rec.indexed:
            return
        rec.indexed = True
        rec.token += 1
        self._agent_index.add(rec.keys, (*agent_order(rec), rec.agent.agent_id, rec.token))

    def unindex_agent(self, rec: AgentRecord) -> None:
        if not rec.indexed:
            return
        rec.indexed = False
        rec.token += 1
        self._agent_index.remove(rec.keys)

    def ready_count(self) -> int:
        return self._agent_index.count((*self._any, NO_PREFERENCE))

    def _agent_entry_live(self, e: tuple) -> bool:
        rec = self._agents.get(e[-2])
        return rec is not None and rec.indexed and rec.token == e[-1]

    def _peek_agent(self, key: tuple, exclude: set[str]) -> AgentRecord | None:
        e = self._agent_index.peek(key, (lambda e: e[-2] in exclude) if exclude else None)
        return self._agents[e[-2]] if e is not None else None

    def _suits(self, rec: AgentRecord, tier: tuple[str, ...]) -> bool:
        return all(v == ANY or v in d.agent_values(rec.agent) for d, v in zip(self.dimensions, tier, strict=True))

    # ----- calls ----------------------------------------------------------------------------------
    def prepare_call(self, crec: CallRecord) -> None:
        """Work out, once per waiting call, where it sits and where it looks (shared by every call that
        asks for the same things at the same level: a dict look-up, and no tuples per caller)."""
        call = crec.call
        if call.only is not None:
            crec.keys, crec.agent_tiers = (), self._target_tiers(crec)
            return
        shape = (call.priority_level, *[d.call_value(call) for d in self.dimensions])
        found = self._call_shapes.get(shape)
        if found is None:
            if len(self._call_shapes) >= _SHAPES_KEPT:
                self._call_shapes.clear()
            found = self._call_shapes[shape] = self._call_shape(int(shape[0]), shape[1:])
        crec.keys, crec.agent_tiers = found

    def _call_shape(self, lvl: int, values: tuple[str | None, ...]) -> tuple[tuple, tuple]:
        keys = tuple(
            (lvl, *[(v or NONE) if keep else ANY for v, keep in zip(values, mask, strict=True)]) for mask in self._masks
        )
        tiers: list[tuple[str, ...]] = []
        for mask in self._masks:
            tier = tuple((v or ANY) if keep else ANY for v, keep in zip(values, mask, strict=True))
            if tier not in tiers:
                tiers.append(tier)
        return keys, tuple(tiers)

    def index_call(self, crec: CallRecord) -> None:
        if crec.indexed:
            return
        crec.indexed = True
        crec.token += 1
        if crec.call.only is not None:
            self._targeted[crec.call.call_id] = crec
            return
        self._call_index.add(crec.keys, (crec.seq, crec.call.call_id, crec.token))

    def unindex_call(self, crec: CallRecord) -> None:
        """Only a call waiting without an offer is indexed."""
        if not crec.indexed:
            return
        crec.indexed = False
        crec.token += 1
        if crec.call.only is not None:
            self._targeted.pop(crec.call.call_id, None)
            return
        self._call_index.remove(crec.keys)

    # ----- transferred calls ----------------------------------------------------------------------
    def _target_tiers(self, crec: CallRecord) -> tuple[tuple[str, ...], ...]:
        """A skill group's tiers: the usual ones for the call's language and the group's skill, less
        every tier that drops the skill (the group is the whole point)."""
        only = crec.call.only
        assert only is not None
        if only.skill is None or self._skill_dim is None:
            return ()
        call = replace(crec.call, required_skill=only.skill, only=None)
        values = tuple(d.call_value(call) for d in self.dimensions)
        _keys, tiers = self._call_shape(int(call.priority_level), values)
        return tuple(t for t in tiers if t[self._skill_dim] != ANY)

    def targeted_in_order(self) -> list[CallRecord]:
        """Transferred calls waiting unoffered, in the queue's order (priority, then arrival)."""
        return sorted(self._targeted.values(), key=lambda c: c.order_key)

    def targeted_count(self) -> int:
        return len(self._targeted)

    def in_target(self, crec: CallRecord, rec: AgentRecord) -> bool:
        """Is this agent (whatever their state) part of the transferred call's target?"""
        only = crec.call.only
        if only is None:
            return True
        if only.agent_id is not None:
            return rec.agent.agent_id == only.agent_id
        return only.skill in rec.agent.skills

    def _pick_target_agent(self, crec: CallRecord) -> AgentRecord | None:
        only = crec.call.only
        assert only is not None
        missed = crec.missed_by
        if only.agent_id is not None:
            rec = self._agents.get(only.agent_id)
            ok = rec is not None and rec.eligible and rec.indexed and only.agent_id not in missed
            return rec if ok else None
        call = crec.call
        prefs = self._prefs_by_level[call.priority_level]
        prev = self._agents.get(call.previous_agent_id) if call.previous_agent_id and self.prefer_previous_agent else None
        for tier in crec.agent_tiers:
            if not self._agent_index.count((*tier, NO_PREFERENCE)):
                continue
            if prev is not None and prev.eligible and prev.agent.agent_id not in missed and self._suits(prev, tier):
                return prev
            for pref in (*prefs, NO_PREFERENCE):
                found = self._peek_agent((*tier, pref), missed)
                if found is not None:
                    return found
        return None

    def unoffered_count(self) -> int:
        return sum(self._call_index.count((lv, *self._any)) for lv in self._levels_desc)

    def head_call(self) -> CallRecord | None:
        """The first call in the queue's order that is not ringing anyone."""
        for lv in self._levels_desc:
            found = self._peek_call((lv, *self._any))
            if found is not None:
                return found
        return None

    def _call_entry_live(self, e: tuple) -> bool:
        rec = self._calls.get(e[1])
        return rec is not None and rec.indexed and rec.token == e[2]

    def _peek_call(self, key: tuple) -> CallRecord | None:
        e = self._call_index.peek(key)
        return self._calls[e[1]] if e is not None else None

    # ----- the two decisions -----------------------------------------------------------------------
    def pick_agent_for(self, crec: CallRecord) -> AgentRecord | None:
        """A call waits: the READY agent it gets (rules 2-5; rule 1 chose the call)."""
        call = crec.call
        if call.only is not None:
            return self._pick_target_agent(crec)
        prefs = self._prefs_by_level[call.priority_level]
        prev = (
            self._agents.get(call.previous_agent_id)
            if call.previous_agent_id and self.prefer_previous_agent
            else None
        )
        index = self._agent_index
        # Rule 5's second half: an agent who missed this call only gets it again when nobody else is ready.
        for exclude in (crec.missed_by, set()) if crec.missed_by else (set(),):
            for tier in crec.agent_tiers:
                if not index.count((*tier, NO_PREFERENCE)):
                    continue
                if (
                    prev is not None
                    and prev.eligible
                    and prev.agent.agent_id not in exclude
                    and self._suits(prev, tier)
                ):
                    return prev
                for pref in prefs:
                    found = self._peek_agent((*tier, pref), exclude)
                    if found is not None:
                        return found
                found = self._peek_agent((*tier, NO_PREFERENCE), exclude)
                if found is not None:
                    return found
        return None

    def pick_call_for(self, arec: AgentRecord) -> CallRecord | None:
        """An agent freed up while callers wait: top level, then the best tier for this agent, oldest."""
        for lv in self._levels_desc:
            if not self._call_index.count((lv, *self._any)):
                continue
            for slots in arec.call_tiers:
                best: CallRecord | None = None
                for slot in slots:
                    c = self._peek_call((lv, *slot))
                    if c is not None and (best is None or c.seq < best.seq):
                        best = c
                if best is not None:
                    return best
        return None


__all__ = [
    "ANY",
    "DIMENSIONS",
    "NONE",
    "PREFERENCES",
    "AgentSelector",
    "LazyIndex",
    "MatchDimension",
    "Preference",
    "agent_order",
    "tier_masks",
]
