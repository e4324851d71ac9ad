"""Several hotlines (issue 12, point 3): the configuration, the resolution of a call to its hotline, the IVR
per hotline, and call distribution that offers a call only to its hotline's agents.

Storage, reports, the API and the wallboard by hotline: tests/test_hotlines_data.py. On the real PBX:
tests/pbx/test_pbx_hotlines.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from callcentre.config import ACDConfig, BusinessHours, Config, ConfigError, load_config
from callcentre.domain.acd import (
    Agent,
    Distributor,
    MakeOffer,
    NoAgentAvailable,
    OnlyFor,
    PriorityLevel,
    RingOnDuty,
    TargetUnavailable,
    WaitingCall,
    offers_in,
)
from callcentre.domain.hotlines import (
    DEFAULT_HOTLINE_ID,
    SHARED_PROMPTS,
    Hotlines,
    NightService,
    PromptSet,
    dialled_number,
)
from callcentre.domain.ivr import HotlineIVR, HotlineRouter, Outcome, required_prompts
from callcentre.domain.ports import FakeClock
from callcentre.domain.wallboard import wallboard_snapshot
from fakes import FakeChannel, FakeDirectory, FakeTicketStore, owner

REPO = Path(__file__).resolve().parent.parent
PHONE = "+8613800138000"

TWO = {
    "hotlines": [
        {"id": "riverside", "name": {"zh": "江畔花园", "en": "Riverside Gardens"}, "dids": ["4008001001", "+86 21 8888-0001"],
         "default": True, "agent_groups": ["riverside"]},
        {"id": "lakeside", "name": {"zh": "湖畔雅苑", "en": "Lakeside Court"}, "dids": ["4008002002"],
         "agent_groups": ["lakeside"], "agents": ["boss"],
         "ivr": {"menu": {"1": None, "4": "agent"}, "default_language": "en"},
         "business_hours": {"days": [], "open": "08:00", "close": "20:00"},
         "on_duty_interface": "PJSIP/lakeside-duty",
         "prompts": {"own": ["greeting", "closed-hours"]}},
    ],
}


def two() -> Config:
    return Config.model_validate(TWO)


def load(tmp_path: Path, data: dict) -> Config:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_config(p, environ={})


# ------------------------------------------------------------------------------------------- configuration


def test_without_hotlines_one_implicit_hotline_is_the_top_level_keys() -> None:
    cfg = Config()
    hl = Hotlines.from_config(cfg)
    assert hl.implicit and hl.ids == (DEFAULT_HOTLINE_ID,) and hl.default.id == "default"
    h = hl.default
    assert h.ivr is cfg.ivr and h.prompts is SHARED_PROMPTS  # the same objects: nothing differs
    assert h.night == NightService(cfg.acd.business_hours, cfg.acd.on_duty_interface)
    assert hl.for_did("4008001234") == (h, False) and hl.for_did(None) == (h, False)
    assert h.answered_by("anyone", frozenset()) and hl.for_agent("a", ["repair"]) == frozenset({"default"})


def test_hotlines_inherit_the_top_level_and_override_what_differs() -> None:
    cfg = two()
    hl = Hotlines.from_config(cfg)
    river, lake = hl.get("riverside"), hl.get("lakeside")
    assert river is not None and lake is not None and not hl.implicit
    assert river.ivr is cfg.ivr  # nothing overridden: the top-level ivr itself
    assert "1" not in lake.ivr.menu and lake.ivr.menu["4"] == "agent" and lake.ivr.default_language == "en"
    assert lake.ivr.menu["2"] == "repair" and lake.ivr.repair_categories == cfg.ivr.repair_categories  # inherited
    assert river.night.business_hours == cfg.acd.business_hours and river.night.on_duty_interface is None
    assert lake.night.business_hours.days == [] and lake.night.on_duty_interface == "PJSIP/lakeside-duty"
    assert river.dids == {"4008001001", "862188880001"}
    assert lake.prompts == PromptSet("hotlines/lakeside", frozenset({"greeting", "closed-hours"}))
    assert lake.name("zh") == "湖畔雅苑" and lake.card() == {"id": "lakeside", "name": {"zh": "湖畔雅苑", "en": "Lakeside Court"}}


def test_a_call_is_resolved_by_the_digits_it_dialled_else_the_default() -> None:
    hl = Hotlines.from_config(two())
    assert hl.for_did("4008002002")[0].id == "lakeside"
    assert hl.for_did("+862188880001") == (hl.get("riverside"), True)
    assert hl.for_did("99999") == (hl.get("riverside"), False)  # not listed: the default
    for junk in ("", "40080020;02", "4008002002\n", "${EXTEN}", "4" * 33, None):
        assert hl.for_did(junk) == (hl.get("riverside"), False), junk
    assert dialled_number("+4008002002") == "4008002002" and dialled_number(" 4008002002") is None
    # without a hotline marked default, the first one answers unknown numbers
    data = {"hotlines": [dict(TWO["hotlines"][1]), {**TWO["hotlines"][0], "default": False}]}
    assert Hotlines.from_config(Config.model_validate(data)).for_did("1")[0].id == "lakeside"


def test_agents_answer_hotlines_by_group_tag_or_login() -> None:
    hl = Hotlines.from_config(two())
    assert hl.for_agent("wang", ["repair", "riverside"]) == {"riverside"}
    assert hl.for_agent("zhao", ["riverside", "lakeside"]) == {"riverside", "lakeside"}
    assert hl.for_agent("boss", ["repair"]) == {"lakeside"}  # listed by login
    assert hl.for_agent("new", ["repair"]) == frozenset()  # in no group: answers no hotline
    open_to_all = Config.model_validate({"hotlines": [{"id": "one", "name": {"en": "One"}}]})
    assert Hotlines.from_config(open_to_all).for_agent("new", []) == {"one"}  # no groups: every agent


@pytest.mark.parametrize("change, key, reason", [
    (lambda d: d["hotlines"][1].update(dids=["4008001001"]), "hotlines", "claimed by both 'riverside' and 'lakeside'"),
    (lambda d: d["hotlines"][1].update(dids=["+86 21 8888 0001"]), "hotlines", "862188880001 is claimed by both"),
    (lambda d: d["hotlines"][1].update(id="riverside"), "hotlines", "'riverside' is used twice"),
    (lambda d: d["hotlines"][1].update(default=True), "hotlines", "only one may be the default"),
    (lambda d: d["hotlines"][1].update(id="Lake Side"), "hotlines.1.id", "lower-case letters"),
    (lambda d: d["hotlines"][1].update(dids=["400-800;2002"]), "hotlines.1.dids", "is not a number"),
    (lambda d: d["hotlines"][1].update(name={}), "hotlines.1.name", "needs a display name"),
    (lambda d: d["hotlines"][1]["ivr"].update(menu={"0": None, "4": None}), "hotlines[1] (lakeside).ivr", "lead to 'agent'"),
    (lambda d: d["hotlines"][1]["ivr"].update(colour="blue"), "hotlines[1] (lakeside).ivr", "colour: unknown key"),
    (lambda d: d["hotlines"][1]["ivr"].update(menu={"5": "dance"}), "hotlines[1] (lakeside).ivr", "menu.5"),
    (lambda d: d["hotlines"][1].update(on_duty_interface="PJSIP/a&b"), "hotlines.1.on_duty_interface", "must look like"),
    (lambda d: d["hotlines"][1].update(agent_groups=["Lake side"]), "hotlines.1.agent_groups", "group tags"),
    (lambda d: d["hotlines"][1]["prompts"].update(dir="../etc"), "hotlines.1.prompts.dir", "relative folder"),
    (lambda d: d["hotlines"][1]["prompts"].update(texts={"goodbye": {"zh": "再见"}}), "hotlines.1.prompts", "not in own"),
])
def test_bad_hotlines_name_the_key_and_the_reason(tmp_path: Path, change, key, reason) -> None:
    import copy

    data = copy.deepcopy(TWO)
    change(data)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, data)
    assert key in str(err.value) and reason in str(err.value), str(err.value)


def test_the_shipped_example_and_the_commented_config_are_valid() -> None:
    cfg = load_config(REPO / "examples" / "two-estates.yaml", environ={})
    hl = Hotlines.from_config(cfg)
    assert hl.ids == ("riverside", "lakeside") and hl.default.id == "riverside"
    assert hl.for_agent("zhao", ["riverside", "lakeside", "repair"]) == {"riverside", "lakeside"}
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    assert "hotlines:" not in [line.strip() for line in text.splitlines()]  # the sample keeps the defaults
    block = text[text.index("#hotlines:"):]
    example = yaml.safe_load("\n".join(ln[1:] for ln in block.splitlines() if ln.startswith("#")))
    assert [h.id for h in Config.model_validate(example).hotlines] == ["riverside", "lakeside"]
    assert load_config(REPO / "config.yaml", environ={}).hotlines == []


def test_prompt_sets_use_own_recordings_and_fall_back_to_the_shared_ones() -> None:
    ps = PromptSet("hotlines/lakeside", frozenset({"greeting"}))
    assert ps.resolve("greeting", "zh") == "hotlines/lakeside/zh/greeting"
    assert ps.resolve("en/greeting", "zh") == "hotlines/lakeside/en/greeting"
    assert ps.resolve("goodbye", "zh") == "zh/goodbye" and ps.resolve("en/press-9", "zh") == "en/press-9"
    assert SHARED_PROMPTS.resolve("greeting", "en") == "en/greeting"
    # every hotline's menu prompts are required (the tests check the committed prompts against this)
    assert "menu-agent" in required_prompts(two()) and "greeting" in required_prompts(two())


# ------------------------------------------------------------------------------------------- the IVR


class Connector:
    def __init__(self) -> None:
        self.calls: list = []

    async def connect(self, ch, call, *, reason, skill, emergency):
        self.calls.append(call)
        return Outcome.AGENT


def router(cfg: Config | None = None):
    store, connector = FakeTicketStore(), Connector()
    r = HotlineRouter(cfg or two(), FakeDirectory(by_phone={PHONE: [owner()]}), store, FakeClock(), connector)
    return r, store, connector


async def test_each_caller_hears_the_greeting_and_menu_of_the_number_dialled() -> None:
    r, store, _ = router()
    river = FakeChannel(inputs=["2", "1", "#"], args=("4008001001",), uniqueid="1.1")
    assert await r.run(river) is Outcome.DONE
    # riverside lists no own recordings: `own` defaults to [greeting], its greeting is its own
    assert river.played[0] == "hotlines/riverside/zh/greeting"
    assert "zh/menu-self-service" in river.played and "zh/goodbye" in river.played
    lake = FakeChannel(inputs=["2", "1", "#"], args=("4008002002",), uniqueid="2.1")
    assert await r.run(lake) is Outcome.DONE
    assert lake.played[0] == "hotlines/lakeside/en/greeting"  # its own language and recording
    assert "en/menu-self-service" not in lake.played and "en/press-4" in lake.played  # its own menu
    assert [d.hotline for d in store.drafts] == ["riverside", "lakeside"]
    started = {uid: data["hotline"] for uid, kind, data in store.events if kind == "started"}
    assert started == {"1.1": "riverside", "2.1": "lakeside"}


async def test_an_unlisted_or_missing_number_gets_the_default_hotline() -> None:
    r, store, connector = router()
    for args in (("99999",), (), ("",), ("4008002002;x",)):
        ch = FakeChannel(inputs=["0"], args=args)
        assert await r.run(ch) is Outcome.AGENT
        assert ch.played[0] == "hotlines/riverside/zh/greeting", args
    assert {c.hotline_id for c in connector.calls} == {"riverside"}


async def test_without_hotlines_the_ivr_plays_exactly_what_it_played_before() -> None:
    store = FakeTicketStore()
    single = HotlineIVR(Config(), FakeDirectory(by_phone={PHONE: [owner()]}), store, FakeClock())
    routed, store2, _ = router(Config())
    a, b = FakeChannel(inputs=["2", "1", "#"]), FakeChannel(inputs=["2", "1", "#"], args=("4008001234",))
    await single.run(a)
    await routed.run(b)
    assert a.played == b.played and a.played[0] == "zh/greeting"
    assert store.drafts[0].hotline == store2.drafts[0].hotline == DEFAULT_HOTLINE_ID


# ------------------------------------------------------------------------------------------- distribution

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # Tuesday 10:00 in Shanghai


def agent(agent_id: str, *hotlines: str, skills=("repair",)) -> Agent:
    return Agent(agent_id, agent_id, agent_id, f"PJSIP/{agent_id}", frozenset(skills), frozenset({"zh"}),
                 hotlines=frozenset(hotlines))


def call(call_id: str, hotline: str | None, level=PriorityLevel.NORMAL, at: datetime = T0) -> WaitingCall:
    return WaitingCall(call_id, call_id, PHONE, None, "zh", None, level, at, hotline=hotline)


def dist(night=None, **acd) -> tuple[Distributor, FakeClock]:
    clock = FakeClock(T0)
    d = Distributor(ACDConfig(**acd), clock, night=night)
    return d, clock


def test_a_call_is_offered_only_to_its_hotlines_agents_and_waits_while_another_idles() -> None:
    d, _ = dist()
    d.add_agent(agent("lake1", "lakeside"))
    d.add_agent(agent("river1", "riverside"))
    d.login("lake1")
    out = d.enqueue(call("r1", "riverside"))
    assert offers_in(out) == [] and d.ready_count() == 1  # lake1 idles: not riverside's agent
    assert d.position("r1") == 1 and d.expected_wait("r1") is None  # nobody staffed for riverside
    assert any(isinstance(x, NoAgentAvailable) and x.reason == "no_agents" for x in out)
    # a lakeside caller arriving later is served at once, past the riverside caller waiting
    [offer] = offers_in(d.enqueue(call("l1", "lakeside", at=T0 + timedelta(seconds=1))))
    assert (offer.call_id, offer.agent_id, offer.hotline) == ("l1", "lake1", "lakeside")
    # the riverside agent logs in: the riverside caller gets them, never the busy lakeside agent
    [offer] = offers_in(d.login("river1"))
    assert (offer.call_id, offer.agent_id) == ("r1", "river1")


def test_a_freed_agent_takes_only_calls_of_their_hotlines_in_queue_order() -> None:
    d, clock = dist(wrapup_seconds=0)
    both = agent("both", "riverside", "lakeside")
    d.add_agent(both)
    d.add_agent(agent("river1", "riverside"))
    d.login("river1")
    [o] = offers_in(d.enqueue(call("r0", "riverside")))
    d.on_answered(o.offer_id)
    d.enqueue(call("l1", "lakeside", at=T0 + timedelta(seconds=1)))
    d.enqueue(call("r1", "riverside", at=T0 + timedelta(seconds=2)))
    d.enqueue(call("l2", "lakeside", PriorityLevel.EMERGENCY, at=T0 + timedelta(seconds=3)))
    # an agent of both takes the emergency first, then the oldest of either hotline
    [o] = offers_in(d.login("both"))
    assert o.call_id == "l2"
    d.on_answered(o.offer_id)
    # the riverside-only agent, freed, skips the lakeside caller who waits longer
    [o] = offers_in(d.on_call_ended("r0#1"))
    assert (o.call_id, o.agent_id) == ("r1", "river1")
    assert d.position("l1") == 1 and d.snapshot().queue[0].hotline == "lakeside"


def test_night_service_per_hotline_while_another_is_open() -> None:
    closed = NightService(BusinessHours(days=[], open="08:00", close="20:00"), "PJSIP/lakeside-duty")
    d, _ = dist(night={"lakeside": closed}, on_duty_interface="PJSIP/shared-duty")
    d.add_agent(agent("river1", "riverside"))
    d.login("river1")
    out = d.enqueue(call("l1", "lakeside", PriorityLevel.EMERGENCY))
    assert out == [RingOnDuty("l1", "l1", "PJSIP/lakeside-duty")]  # Lakeside's duty phone, not the shared one
    assert offers_in(out) == []  # the riverside agent idles: not lakeside's
    assert d.enqueue(call("l2", "lakeside")) == [NoAgentAvailable("l2", "l2", "closed")]
    out = d.enqueue(call("r1", "riverside"))
    assert [o.agent_id for o in offers_in(out)] == ["river1"]  # riverside is open (the shared hours: always)
    out = d.enqueue(call("r2", "riverside", PriorityLevel.EMERGENCY))
    assert not any(isinstance(x, (NoAgentAvailable, RingOnDuty)) for x in out)  # riverside is staffed


def test_staffed_counts_follow_the_agents_hotlines() -> None:
    d, _ = dist()
    d.add_agent(agent("a", "riverside"))
    d.add_agent(agent("b", "riverside", "lakeside"))
    d.login("a")
    d.login("b")
    assert (d.staffed_count(), d.staffed_count("riverside"), d.staffed_count("lakeside")) == (2, 2, 1)
    d.update_agent(agent("b", "riverside"))  # moved off lakeside while staffed
    assert (d.staffed_count("riverside"), d.staffed_count("lakeside")) == (2, 0)
    d.logout("a")
    assert (d.staffed_count(), d.staffed_count("riverside")) == (1, 1)
    out = d.enqueue(call("l1", "lakeside"))
    assert NoAgentAvailable("l1", "l1", "no_agents") in out


def test_figures_per_hotline_on_the_wallboard() -> None:
    d, clock = dist()
    d.add_agent(agent("river1", "riverside"))
    d.add_agent(agent("lake1", "lakeside"))
    d.login("river1")
    [o] = offers_in(d.enqueue(call("r1", "riverside")))
    clock.advance(3)
    d.on_answered(o.offer_id)
    d.enqueue(call("l1", "lakeside"))
    clock.advance(5)
    d.withdraw("l1", "abandoned")
    d.enqueue(call("l2", "lakeside"))
    snap = d.snapshot()
    assert snap.by_hotline["riverside"].calls_answered == 1 and snap.by_hotline["lakeside"].calls_abandoned == 1
    assert snap.metrics.calls_entered == 3
    cards = Hotlines.from_config(two()).cards()
    wall = wallboard_snapshot(snap, waiting={}, callbacks={}, alerts=[], overdue=[], target_wait_seconds=10,
                              hotlines=cards).to_dict()
    assert wall["hotlines"] == cards and [q["hotline"] for q in wall["queue"]] == ["lakeside"]
    assert {a["agent_id"]: a["hotlines"] for a in wall["agents"]} == {"river1": ["riverside"], "lake1": ["lakeside"]}
    by = wall["figures"]["by_hotline"]
    assert by["riverside"]["answered_today"] == 1 and by["riverside"]["agents_staffed"] == 1
    assert by["lakeside"]["waiting"] == 1 and by["lakeside"]["abandoned_today"] == 1
    assert by["lakeside"]["agents_ready"] == 0 and by["lakeside"]["agents_staffed"] == 0


async def test_the_adapter_queues_the_caller_on_its_hotline_and_the_screen_pop_names_it() -> None:
    import asyncio

    from callcentre.distribution import ACDService
    from callcentre.domain.calls import CallInfo

    cfg = two()
    hl = Hotlines.from_config(cfg)
    pops: list = []
    acd = ACDService(cfg, FakeClock(T0), FakeTicketStore(), publish=lambda topic, msg: pops.append((topic, msg)),
                     hotlines=hl)
    acd.load_agents([Agent("7", "Wang", "wang", "PJSIP/wang", frozenset({"repair", "riverside"})),
                     Agent("8", "Li", "li", "PJSIP/li", frozenset({"repair", "lakeside"}))], {}, {"7", "8"})
    assert acd.dist.agent("7").hotlines == {"riverside"} and acd.dist.agent("8").hotlines == {"lakeside"}
    ch = FakeChannel(inputs=[], uniqueid="9.1")
    info = CallInfo("9.1", "SIP/x-1", "13800138000", PHONE, "", "zh", hotline=hl.get("lakeside"))
    task = asyncio.ensure_future(acd.connect(ch, info, reason="caller-asked", skill=None, emergency=False))
    for _ in range(20):
        await asyncio.sleep(0)
    snap = acd.dist.snapshot()
    assert snap.queue[0].hotline == "lakeside"
    # the fake phone never answers: the lakeside agent is rung (and missed), the riverside one never
    offered = {a.agent_id: a.offers_today for a in snap.agents}
    assert offered["8"] >= 1 and offered["7"] == 0 and acd.dist.agent_state("7").value == "ready"
    popped = [p for p in pops if p[1].get("type") == "screen_pop"]
    assert popped and {topic for topic, _ in popped} == {"agent:8"}
    assert popped[0][1]["call"]["hotline"] == {"id": "lakeside", "name": {"zh": "湖畔雅苑", "en": "Lakeside Court"}}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await acd.stop()


def transferred(call_id: str, hotline: str | None, only: OnlyFor) -> WaitingCall:
    return WaitingCall(call_id, call_id, PHONE, None, "zh", None, PriorityLevel.NORMAL, T0, hotline=hotline, only=only,
                       offer_prefix="x1-", target_wait_seconds=60)


def test_a_transfer_to_a_skill_group_stays_on_the_calls_hotline_unless_nobody_of_it_there_is_staffed() -> None:
    """docs/transfers.md: a skill group is kept to the call's hotline; widened to the whole group only when
    none of that hotline's agents of it is staffed; a named agent may be on any hotline; the call keeps
    its hotline throughout (offers, queue)."""
    d, clock = dist()
    for a in (agent("river1", "riverside", skills=("fees",)), agent("lake1", "lakeside", skills=("fees",)),
              agent("lake2", "lakeside", skills=())):
        d.add_agent(a)
    d.login("river1")  # ready longest: first in the group's order if hotlines did not count
    clock.advance(1)
    d.login("lake1")
    out = d.enqueue(transferred("t1", "lakeside", OnlyFor(skill="fees", hotline="lakeside")))
    [o] = offers_in(out)
    assert (o.agent_id, o.hotline, o.offer_id) == ("lake1", "lakeside", "t1#x1-1")
    # lake1 lets it ring out: everyone of the group on the hotline missed it; not widened (a no-answer)
    out = d.on_ring_timeout(o.offer_id)
    assert [x.reason for x in out if isinstance(x, TargetUnavailable)] == ["missed"]
    assert offers_in(out) == [] and d.agent_state("river1").value == "ready"

    # nobody of the group staffed on the call's hotline: the whole group (river1)
    d, clock = dist()
    for a in (agent("river1", "riverside", skills=("fees",)), agent("lake1", "lakeside", skills=("fees",)),
              agent("lake2", "lakeside", skills=())):
        d.add_agent(a)
    d.login("river1")
    d.login("lake2")  # staffed on lakeside, but not of the group
    out = d.enqueue(transferred("t2", "lakeside", OnlyFor(skill="fees", hotline="lakeside")))
    [o] = offers_in(out)
    assert (o.agent_id, o.hotline) == ("river1", "lakeside") and not any(isinstance(x, TargetUnavailable) for x in out)
    [q] = d.snapshot().queue
    assert (q.hotline, q.target) == ("lakeside", "skill:fees")  # widened, and still a lakeside call

    # the group's lakeside agent is staffed but busy: the call waits for them while river1 idles
    d, clock = dist()
    for a in (agent("river1", "riverside", skills=("fees",)), agent("lake1", "lakeside", skills=("fees",))):
        d.add_agent(a)
    d.login("lake1")
    [busy] = offers_in(d.enqueue(call("l0", "lakeside")))
    d.on_answered(busy.offer_id)
    d.login("river1")
    out = d.enqueue(transferred("t3", "lakeside", OnlyFor(skill="fees", hotline="lakeside")))
    assert offers_in(out) == [] and not any(isinstance(x, TargetUnavailable) for x in out)
    [q] = d.snapshot().queue
    assert (q.hotline, q.target) == ("lakeside", "skill:fees@lakeside")

    # a named agent is an explicit choice: another hotline's agent gets it
    [o] = offers_in(d.enqueue(transferred("t4", "lakeside", OnlyFor(agent_id="river1"))))
    assert (o.call_id, o.agent_id, o.hotline) == ("t4", "river1", "lakeside")

    # the fallback to the queue: the caller waits among lakeside's callers, for lakeside's agents only
    d.on_ring_timeout(o.offer_id)
    d.retarget("t4", None)
    assert d.agent_state("river1").value == "ready" and d.position("t4") == 1
    assert {q.call_id: (q.hotline, q.target) for q in d.snapshot().queue}["t4"] == ("lakeside", None)


def test_the_make_offer_carries_its_hotline() -> None:
    d, _ = dist()
    d.add_agent(agent("a", "riverside"))
    d.login("a")
    [decision] = [x for x in d.enqueue(call("c", "riverside")) if isinstance(x, MakeOffer)]
    assert decision.offer.hotline == "riverside"


def test_a_hotline_recording_missing_from_the_prompts_folder_is_a_warning_at_start_up(monkeypatch) -> None:
    from callcentre.app import _warn_missing_hotline_prompts

    monkeypatch.chdir(REPO)  # prompts.local_dir is relative: the repository's prompts/
    example = load_config(REPO / "examples" / "two-estates.yaml", environ={})
    assert _warn_missing_hotline_prompts(example, Hotlines.from_config(example)) == []  # committed
    hill = Config.model_validate({"hotlines": [{"id": "hill", "name": {"en": "Hill"}, "prompts": {"own": ["greeting"]}}]})
    assert _warn_missing_hotline_prompts(hill, Hotlines.from_config(hill)) == [
        "hotlines/hill/zh/greeting", "hotlines/hill/en/greeting"]
    assert _warn_missing_hotline_prompts(Config(), Hotlines.from_config(Config())) == []  # the shared set: not checked here
