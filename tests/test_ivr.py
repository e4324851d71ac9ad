"""The IVR flow against fake ports: no sockets, no database."""

from __future__ import annotations

import pytest

from callcentre.config import Config
from callcentre.domain.ivr import HotlineIVR, Outcome, required_prompts
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.ports import FakeClock
from callcentre.domain.ports import StorageUnavailable
from fakes import HANGUP, FakeChannel, FakeDirectory, FakeTicketStore, owner, replace

PHONE = "+8613800138000"


class RecordingConnector:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def connect(self, ch, call, *, reason, skill, emergency):
        self.calls.append({"reason": reason, "skill": skill, "emergency": emergency, "path": call.ivr_path,
                           "owner": call.owner, "tickets": list(call.tickets)})
        return Outcome.AGENT


def make(cfg: Config | None = None, *, owners=None, directory=None, store=None):
    cfg = cfg or Config()
    directory = directory or FakeDirectory(by_phone={PHONE: owners if owners is not None else [owner()]})
    store = store or FakeTicketStore()
    connector = RecordingConnector()
    ivr = HotlineIVR(cfg, directory, store, FakeClock(), connector)
    return ivr, directory, store, connector


async def test_known_owner_reports_a_repair_and_hears_the_ticket_number():
    ivr, _, store, connector = make()
    ch = FakeChannel(inputs=["2", "1", "#"])
    outcome = await ivr.run(ch)
    assert outcome is Outcome.DONE
    assert ch.variables["CC_RESULT"] == "done"
    [t] = store.tickets
    assert (t.kind, t.category, t.priority) == (TicketKind.REPAIR, "water", Priority.GENERAL)
    assert t.owner_id == 1 and t.unit_id == 10 and t.caller_id == PHONE and t.caller_id_raw == "13800138000"
    assert t.voice_file and t.voice_file.endswith(".wav") and "1795351990-1-repair" in t.voice_file
    assert t.ivr_path.startswith("2>1>rec:")
    # the number is read back only after the ticket exists, followed by the promise
    played = ch.played
    i = played.index("zh/ticket-created")
    assert "zh/promise-by" in played[i:]
    assert [o[0] for o in ch.ops].index("record") < [o[0] for o in ch.ops].index("set_variable")
    assert connector.calls == []
    assert store.events[-1][1] == "ivr-finished" and store.events[-1][2]["tickets"] == [t.number]
    assert store.acknowledged == [t.id]  # heard through to the promise


async def test_a_ticket_is_kept_and_the_call_goes_on_when_it_cannot_be_marked_as_told():
    class MarkFails(FakeTicketStore):
        async def mark_acknowledged(self, ticket_id):
            raise StorageUnavailable("database is locked")

    ivr, _, store, _ = make(store=MarkFails())
    ch = FakeChannel(inputs=["2", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    assert len(store.tickets) == 1 and store.acknowledged == [] and ch.played[-1] == "zh/goodbye"


async def test_record_is_capped_by_config():
    cfg = Config.model_validate({"ivr": {"record_max_seconds": 30}})
    ivr, _, _, _ = make(cfg)
    ch = FakeChannel(inputs=["3", "4", "#"])
    await ivr.run(ch)
    [rec] = [o for o in ch.ops if o[0] == "record"]
    assert rec[3] == 30


async def test_complaint_apologises_and_uses_complaint_categories():
    ivr, _, store, _ = make()
    ch = FakeChannel(inputs=["3", "8", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    assert ch.played[ch.played.index("zh/main-menu-intro") + 1 :].count("zh/apology") == 1
    [t] = store.tickets
    assert (t.kind, t.category) == (TicketKind.COMPLAINT, "disputes")


async def test_self_service_reads_balance_after_unit_check_then_agent():
    ivr, _, _, connector = make()
    ch = FakeChannel(inputs=["1", "3", "1201", "1", "0"])
    outcome = await ivr.run(ch)
    assert outcome is Outcome.AGENT
    played = ch.played
    assert "zh/fee-balance-is" in played and "zh/fee-due-by" in played and "zh/no-open-ticket" in played
    assert "zh/yuan" in played
    assert connector.calls[0]["reason"] == "caller-asked"
    assert "CC_RESULT" not in ch.variables  # the dialplan only skips its queue for "done"


async def test_self_service_refuses_a_wrong_unit():
    ivr, _, _, _ = make()
    ch = FakeChannel(inputs=["1", "9", "999", "1", "9", "999", "1", "9", "999", "1", ""])
    await ivr.run(ch)
    assert "zh/fee-balance-is" not in ch.played
    assert ch.played.count("zh/unit-not-found") == 3


async def test_unknown_caller_keys_in_unit_and_is_treated_as_that_owner():
    ivr, directory, store, _ = make()
    ch = FakeChannel(caller_id="02888881234", inputs=["2", "3", "1201", "1", "2", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert t.owner_id == 1 and t.unit_id == 10 and t.caller_id == "+862888881234"
    assert ("unit", "3", "1201") in directory.lookups
    assert "zh/unknown-caller" in ch.played and "zh/you-entered" in ch.played


async def test_unknown_caller_may_skip_the_unit_for_a_repair():
    ivr, _, store, _ = make()
    ch = FakeChannel(caller_id="anonymous", inputs=["2", "", "5", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert t.owner_id is None and t.caller_id is None and t.caller_id_raw == "anonymous"
    assert t.category == "public_areas"


async def test_wrong_digits_and_silence_reprompt_three_times_then_agent():
    ivr, _, store, connector = make()
    ch = FakeChannel(inputs=["7", "", "#"])
    assert await ivr.run(ch) is Outcome.AGENT
    assert ch.played.count("zh/invalid-choice") == 1 and ch.played.count("zh/no-input") == 1
    # the menu is played three times, the welcome once
    assert ch.played.count("zh/main-menu-intro") == 3 and ch.played.count("zh/greeting") == 1
    # the apology opens the next try and takes keys (a real PBX drops keys during a prompt without escapes)
    tries = [o[1] for o in ch.ops if o[0] == "get_digits"]
    assert [t[0] for t in tries] == ["zh/greeting", "zh/invalid-choice", "zh/no-input"]
    assert not any(o[0] == "play" and ("zh/invalid-choice" in o[1] or "zh/no-input" in o[1]) for o in ch.ops)
    assert connector.calls[0]["reason"] == "menu-attempts"
    assert store.tickets == []


async def test_english_digit_switches_language():
    ivr, _, _, _ = make()
    ch = FakeChannel(inputs=["9", "2", "6", "#"])
    await ivr.run(ch)
    assert "en/language-switched" in ch.played and "en/ticket-created" in ch.played
    assert not any(p.startswith("zh/") for p in ch.played[ch.played.index("en/language-switched"):])


async def test_emergency_makes_a_major_ticket_and_goes_to_an_agent_at_once():
    ivr, _, store, connector = make()
    ch = FakeChannel(inputs=["8", "2"])
    assert await ivr.run(ch) is Outcome.AGENT
    [t] = store.tickets
    assert (t.kind, t.category, t.priority) == (TicketKind.EMERGENCY, "lift_entrapment", Priority.MAJOR)
    assert connector.calls[0]["emergency"] is True and connector.calls[0]["tickets"] == [t.number]
    assert "zh/emergency-connecting" in ch.played


async def test_directory_down_sends_caller_to_agent():
    ivr, _, _, connector = make(directory=FakeDirectory(fail=True))
    ch = FakeChannel()
    assert await ivr.run(ch) is Outcome.AGENT
    assert "zh/system-busy-agent" in ch.played
    assert connector.calls[0]["reason"] == "storage-unavailable"


async def test_ticket_store_down_tells_the_caller_and_sends_to_agent():
    ivr, _, store, connector = make(store=FakeTicketStore(fail=True))
    ch = FakeChannel(inputs=["2", "1", "#"])
    assert await ivr.run(ch) is Outcome.AGENT
    assert "zh/ticket-created" not in ch.played  # nothing promised that was not saved
    assert "zh/system-busy-agent" in ch.played
    assert connector.calls[0]["reason"] == "ticket-not-saved"


class CanonicalDirectory(FakeDirectory):
    """find_unit with the real directory's label rule (storage.repo.canonical_label): 0305 is 305."""

    async def find_unit(self, building, unit):
        from callcentre.storage.repo import canonical_label

        self.lookups.append(("unit", building, unit))
        seen = {}
        for matches in self.by_phone.values():
            for m in matches:
                if (canonical_label(m.building), canonical_label(m.unit)) == (canonical_label(building), canonical_label(unit)):
                    seen[(m.owner_id, m.unit_id)] = m
        return list(seen.values())


TWO_UNITS = [owner(owner_id=1, unit_id=10, building="1", unit="301"),
             owner(owner_id=2, unit_id=11, building="2", unit="502", name="Li Si")]


def _after(played: list[str], name: str) -> list[str]:
    return played[played.index(name):]


async def test_shared_phone_says_why_and_offers_its_units_by_digit():
    from callcentre.domain import speech

    ivr, directory, store, _ = make(owners=TWO_UNITS)
    ch = FakeChannel(inputs=["2", "2", "1", "#"])  # repair, the second unit, water
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert (t.owner_id, t.unit_id) == (2, 11)
    menu = ["phone-shared", "choose-unit", *speech.unit_address("1", "301", "zh"), "press-1",
            *speech.unit_address("2", "502", "zh"), "press-2", "repair-menu-intro"]
    assert _after(ch.played, "zh/phone-shared")[:len(menu)] == [f"zh/{n}" for n in menu]
    assert "zh/enter-building" not in ch.played and "zh/unknown-caller" not in ch.played
    assert t.ivr_path.startswith("2>unit:2-502>1>rec:")
    assert [x for x in directory.lookups if x[0] == "unit"] == []  # chosen, not keyed


async def test_shared_phone_in_english_reads_the_units_the_english_way():
    ivr, _, store, _ = make(owners=TWO_UNITS)
    ch = FakeChannel(inputs=["9", "2", "1", "6", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    assert _after(ch.played, "en/phone-shared")[:9] == [
        "en/phone-shared", "en/choose-unit", "en/building", "en/num-1", "en/unit-word", "en/digit-3", "en/digit-0",
        "en/digit-1", "en/press-1"]
    assert store.tickets[0].owner_id == 1


async def test_shared_phone_without_a_choice_falls_back_to_keying_the_unit_in():
    ivr, directory, store, _ = make(owners=TWO_UNITS, directory=CanonicalDirectory(by_phone={PHONE: TWO_UNITS}))
    # silence at the unit menu, then building 2, unit keyed as the owners file writes it, confirm
    ch = FakeChannel(inputs=["2", "", "2", "0502", "1", "3", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert (t.owner_id, t.unit_id, t.category) == (2, 11, "lift")
    assert ch.played.index("zh/phone-shared") < ch.played.index("zh/enter-building")
    assert "zh/unknown-caller" not in ch.played and "zh/unit-not-found" not in ch.played
    assert ("unit", "2", "0502") in directory.lookups
    assert "2>shared:silence>unit:2-0502>3>" in t.ivr_path


async def test_shared_phone_keyed_unit_must_be_one_of_its_own():
    other = owner(owner_id=3, unit_id=12, building="3", unit="303", name="Stranger")
    directory = CanonicalDirectory(by_phone={PHONE: TWO_UNITS, "+8613911112222": [other]})
    ivr, _, store, _ = make(directory=directory)
    # a wrong digit at the menu, then a unit that exists but is not this phone's: refused
    ch = FakeChannel(inputs=["2", "7", "3", "303", "1", "", "#"])
    await ivr.run(ch)
    assert "zh/unit-not-found" in ch.played
    assert all(t.owner_id != 3 for t in store.tickets)


async def test_two_people_of_one_unit_sharing_a_phone_are_not_asked_which_unit():
    couple = [owner(owner_id=1, unit_id=10, unit="1201"), owner(owner_id=2, unit_id=10, unit="1201", name="Li Na")]
    ivr, _, store, _ = make(owners=couple)
    ch = FakeChannel(inputs=["2", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert (t.owner_id, t.unit_id) == (1, 10)
    assert "zh/phone-shared" not in ch.played and "zh/enter-building" not in ch.played


async def test_shared_phone_with_a_unit_the_keypad_cannot_say_goes_straight_to_keying_in():
    odd = [owner(owner_id=1, unit_id=10, unit="1201"), owner(owner_id=2, unit_id=11, building="B", unit="12A")]
    ivr, _, store, _ = make(owners=odd, directory=CanonicalDirectory(by_phone={PHONE: odd}))
    ch = FakeChannel(inputs=["2", "3", "1201", "1", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    assert store.tickets[0].owner_id == 1
    assert "zh/choose-unit" not in ch.played
    assert ch.played.index("zh/phone-shared") + 1 == ch.played.index("zh/enter-building")


async def test_self_service_on_a_shared_phone_keys_the_unit_in_under_the_unit_guard():
    ivr, _, _, _ = make(owners=TWO_UNITS, directory=CanonicalDirectory(by_phone={PHONE: TWO_UNITS}))
    ch = FakeChannel(inputs=["1", "1", "0301", "1", "#"])
    await ivr.run(ch)
    assert "zh/choose-unit" not in ch.played  # reading this number's units aloud would be no check at all
    assert "zh/fee-balance-is" in ch.played


async def test_self_service_on_a_shared_phone_without_a_guard_offers_the_units():
    cfg = Config.model_validate({"ivr": {"self_service_guard": "none"}})
    ivr, _, _, _ = make(cfg, owners=[TWO_UNITS[0], replace(TWO_UNITS[1], fee_balance_cents=0)])
    ch = FakeChannel(inputs=["1", "2", "#"])
    await ivr.run(ch)
    assert "zh/choose-unit" in ch.played and "zh/enter-building" not in ch.played
    assert "zh/fee-nothing-owed" in ch.played and "zh/fee-balance-is" not in ch.played


@pytest.mark.parametrize("building,unit", [("1", "0305"), ("1", "305"), ("01", "0305"), ("001", "305")])
async def test_self_service_unit_guard_accepts_the_unit_with_or_without_its_leading_zero(building, unit):
    # the directory stores canonical labels (owners file "0305" is unit "305"): the keyed unit is
    # checked by the directory, not compared as text by the IVR
    me = owner(building="1", unit="305")
    ivr, _, _, _ = make(directory=CanonicalDirectory(by_phone={PHONE: [me]}))
    ch = FakeChannel(inputs=["1", building, unit, "1", "#"])
    await ivr.run(ch)
    assert "zh/unit-not-found" not in ch.played
    assert "zh/fee-balance-is" in ch.played
    from callcentre.domain import speech

    heard = _after(ch.played, "zh/you-entered")
    spoken = speech.unit_address(building, unit, "zh")  # read back as keyed
    assert heard[1:1 + len(spoken)] == [f"zh/{n}" for n in spoken]


async def test_self_service_pin_guard_asks_an_unknown_caller_for_the_pin_too():
    cfg = Config.model_validate({"ivr": {"self_service_guard": "pin"}})
    me = owner(has_pin=True)
    directory = CanonicalDirectory(by_phone={"+8613911112222": [me]}, pins={1: "2468"})
    ivr, _, _, _ = make(cfg, directory=directory)
    ch = FakeChannel(caller_id="02888880000", inputs=["1", "3", "1201", "1", "1111", "1111", "1111", "#"])
    await ivr.run(ch)
    assert ch.played.count("zh/pin-wrong") == 3 and "zh/fee-balance-is" not in ch.played
    ch = FakeChannel(caller_id="02888880000", inputs=["1", "3", "1201", "1", "2468", "#"])
    ivr, _, _, _ = make(cfg, directory=directory)
    await ivr.run(ch)
    assert "zh/fee-balance-is" in ch.played


async def test_unit_lookup_failure_is_not_a_crash():
    class Down(CanonicalDirectory):
        async def find_unit(self, building, unit):
            raise StorageUnavailable("database is locked")

    ivr, _, store, _ = make(directory=Down(by_phone={}))
    ch = FakeChannel(caller_id="02888880000", inputs=["2", "3", "1201", "1", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert t.owner_id is None and "unit:db-down" in t.ivr_path


@pytest.mark.parametrize("hangup_at", range(1, 40))
async def test_hangup_at_every_step_of_repair(hangup_at):
    ivr, _, store, _ = make()
    ch = FakeChannel(inputs=["2", "1", "#"], hangup_at=hangup_at)
    outcome = await ivr.run(ch)
    assert outcome in (Outcome.DONE, Outcome.HUNG_UP)
    assert ch.variables.get("CC_RESULT") == "done"  # the dialplan must not queue a caller who hung up
    assert len(store.tickets) <= 1
    recorded = any(o[0] == "record" for o in ch.ops)
    if recorded:  # once the caller reached the recording, their request is kept
        assert len(store.tickets) == 1
    # marked as told only when the caller heard the read-back through to its end
    readback = [i for i, op in enumerate(ch.ops, 1) if op[0] == "play" and "zh/promise-by" in str(op)]
    heard = bool(readback) and readback[0] < hangup_at  # the hang-up came after the read-back's last word
    assert store.acknowledged == ([store.tickets[0].id] if heard else [])
    finished = [e for e in store.events if e[1] == "ivr-finished"]
    assert len(finished) == 1


@pytest.mark.parametrize("hangup_at", range(1, 25))
async def test_hangup_at_every_step_of_self_service_and_unknown_caller(hangup_at):
    ivr, _, store, _ = make()
    ch = FakeChannel(caller_id="", inputs=["1", "3", "1201", "1", "2", "#"], hangup_at=hangup_at)
    outcome = await ivr.run(ch)
    assert outcome in (Outcome.HUNG_UP, Outcome.DONE, Outcome.AGENT)
    assert len([e for e in store.events if e[1] == "ivr-finished"]) == 1


async def test_hangup_by_input_during_record_keeps_the_ticket():
    ivr, _, store, _ = make()
    ch = FakeChannel(inputs=["2", "1", HANGUP])
    assert await ivr.run(ch) is Outcome.HUNG_UP
    [t] = store.tickets
    assert t.ivr_path.endswith("rec:hangup")
    assert store.acknowledged == []  # kept, but never told


async def test_hostile_caller_id_and_name_do_not_break_anything():
    ivr, _, store, _ = make()
    ch = FakeChannel(caller_id='"; EXEC System rm -rf /\n${SHELL(id)}', caller_name="<script>alert(1)</script>\u202e\n",
                     inputs=["2", "", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    [t] = store.tickets
    assert t.caller_id is None
    assert t.caller_id_raw.startswith('"; EXEC')


def test_every_prompt_the_ivr_uses_is_listed():
    names = required_prompts(Config())
    assert {"greeting", "press-0", "cat-water", "ccat-disputes", "emg-gas", "status-in_progress"} <= names


async def test_a_server_stop_leaves_cc_result_unset_so_the_dialplan_queues_the_caller():
    import asyncio

    ivr, _, store, _ = make()

    class SlowChannel(FakeChannel):
        async def get_digits(self, prompts, timeout_ms, max_digits):
            self._op("get_digits", list(prompts), timeout_ms, max_digits)
            await asyncio.sleep(10)  # the caller is listening to the menu

    ch = SlowChannel()
    task = asyncio.ensure_future(ivr.run(ch))
    await asyncio.sleep(0.05)
    task.cancel()  # what the FastAGI server does to sessions still running at the end of its grace
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "CC_RESULT" not in ch.variables
    assert store.events[-1][2]["outcome"] == "interrupted"


async def test_concurrent_calls_each_log_with_their_own_uniqueid():
    """One IVR object serves every call: each call's log lines must carry that call's uniqueid."""
    import asyncio

    from structlog.testing import capture_logs

    import structlog

    ivr, _, _, _ = make()
    a = FakeChannel(uniqueid="1795351990.1", inputs=["2", "1", "#"])
    b = FakeChannel(uniqueid="1795351990.7", inputs=["3", "2", "#"])
    saved = structlog.get_config()
    # Another test may have configured logging at "warning" (the CLI does): capture every level here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0), cache_logger_on_first_use=False)
    try:
        with capture_logs() as logs:
            await asyncio.gather(ivr.run(a), ivr.run(b))
    finally:
        structlog.configure(**saved)
    created = [e for e in logs if e["event"] == "ticket created"]
    assert {(e["uniqueid"], e["kind"]) for e in created} == {("1795351990.1", "repair"), ("1795351990.7", "complaint")}
    assert all(e["ticket"] for e in created)
