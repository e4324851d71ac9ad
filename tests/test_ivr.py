"""The IVR flow against fake ports: no sockets, no database."""

from __future__ import annotations

import pytest

from callcentre.config import Config
from callcentre.domain.ivr import HotlineIVR, Outcome, required_prompts
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.ports import FakeClock
from callcentre.domain.ports import StorageUnavailable
from fakes import HANGUP, FakeChannel, FakeDirectory, FakeTicketStore, owner

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


async def test_shared_phone_asks_which_unit():
    two = [owner(owner_id=1, unit_id=10, unit="1201"), owner(owner_id=2, unit_id=11, unit="1202", name="Li Si")]
    ivr, _, store, _ = make(owners=two)
    ch = FakeChannel(inputs=["2", "3", "1202", "1", "1", "#"])
    assert await ivr.run(ch) is Outcome.DONE
    assert store.tickets[0].owner_id == 2


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
