"""The caller's wait script (domain/waiting.py) over the fake channel: what the caller hears and can press,
and what it asks of call distribution. No sockets; the waiting room is a recording fake."""

from __future__ import annotations

import asyncio

import pytest

from callcentre.config import ACDConfig
from callcentre.domain.acd import (
    Announce,
    MakeOffer,
    MaxWaitReached,
    NoAgentAvailable,
    Offer,
    RingOnDuty,
    WithdrawReason,
)
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.ports import CallerHungUp, FakeClock
from callcentre.domain.waiting import (
    CALLBACK_KEY,
    IllegalWaitTransition,
    Waiter,
    WaitScript,
    WaitState,
    interrupt_digit,
)
from fakes import FakeChannel, FakeTicketStore, captured_logs, owner

UID = "1795351990.1"


def offer(n: int = 1, agent: str = "7", interface: str = "PJSIP/agent1") -> Offer:
    return Offer(f"{UID}#{n}", UID, agent, interface, 10.0, "Zhang San 3-1201", UID)


class Room:
    """A recording WaitingRoom; scripted answers for the Dial and the call-back booking."""

    def __init__(self, store: FakeTicketStore, *, first=(), cancelled=(), ticket_fails: bool = False) -> None:
        self.store = store
        self.first = list(first)  # delivered when the caller enters
        self.cancelled = set(cancelled)
        self.ticket_fails = ticket_fails
        self.calls: list[tuple] = []
        self.after_dial: list = []  # delivered to the inbox each time a Dial returns unanswered

    def enter(self, w: Waiter) -> None:
        self.calls.append(("enter",))
        for item in self.first:
            w.deliver(item)

    def take_offer(self, w: Waiter, o: Offer) -> bool:
        self.calls.append(("take_offer", o.offer_id))
        return o.offer_id not in self.cancelled

    def dialling(self, w: Waiter, o: Offer) -> None:
        self.calls.append(("dialling", o.offer_id, w.state))

    def dial_returned(self, w: Waiter, o: Offer, status, written_at) -> bool:
        self.calls.append(("dial_returned", o.offer_id, status))
        w.dialling_offer = None
        if status == "ANSWER":
            w.go("answered")
            w.agent_id = o.agent_id
            return True
        w.go("dial_unanswered")
        for item in self.after_dial:
            w.deliver(item)
        self.after_dial = []
        return False

    def withdraw(self, w: Waiter, reason: WithdrawReason) -> None:
        self.calls.append(("withdraw", reason))

    def on_duty_answered(self, w: Waiter) -> None:
        self.calls.append(("on_duty_answered",))
        w.go("answered")

    async def book_callback(self, w: Waiter):
        self.calls.append(("book_callback",))
        if self.ticket_fails:
            return None
        return await self.store.create_ticket(
            w.call.ticket_draft(TicketKind.MESSAGE, "callback_request", Priority.GENERAL, source="callback"), None)

    def leaving(self, w: Waiter) -> None:
        self.calls.append(("leaving", w.state))

    def handed_over(self, w: Waiter) -> bool:
        return False

    def left(self, w: Waiter, status) -> None:
        self.calls.append(("left", w.state, status))

    def named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


def caller(ch: FakeChannel, **kw) -> CallInfo:
    return CallInfo(uniqueid=ch.uniqueid, channel=ch.channel_name, caller_id_raw=ch.caller_id,
                    caller_id=kw.pop("caller_id", "+8613800138000"), caller_name="Zhang San", language="zh", **kw)


async def run(ch: FakeChannel, room: Room, store: FakeTicketStore, **cfg) -> tuple[Outcome, Waiter]:
    w = Waiter(ch=ch, call=caller(ch), entered_mono=1000.0)
    script = WaitScript(w, room, ACDConfig(**cfg), FakeClock(), store)
    # a guard against a script waiting on an empty inbox (a bug), not a timing assertion
    return await asyncio.wait_for(script.run(), 5), w


def ops(ch: FakeChannel) -> list[str]:
    return [op[0] for op in ch.ops]


async def test_an_offer_rings_the_agent_for_two_rings_and_an_answered_call_ends_with_the_rating() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(inputs=["4"], variables={"DIALSTATUS": "ANSWER"})
    room = Room(store, first=[MakeOffer(offer())])
    outcome, w = await run(ch, room, store)
    assert outcome is Outcome.DONE and w.state is WaitState.ANSWERED
    # music on hold until the offer, off before the Dial; the agent's phone shows who is calling
    assert ops(ch)[:4] == ["music_on", "music_off", "set_variable", "exec"]
    assert ("set_variable", "CALLERID(name)", "Zhang San 3-1201") in ch.ops
    assert ("exec", "Dial", "PJSIP/agent1", "10") in ch.ops  # 2 rings x 5 s
    # the Dial was announced to the room while the waiter was still waiting, then its status returned
    assert room.named("dialling") == [("dialling", f"{UID}#1", WaitState.WAITING)]
    assert room.named("dial_returned") == [("dial_returned", f"{UID}#1", "ANSWER")]
    # the agent hung up first: the caller rated the call, and the rating is kept with the agent
    assert "zh/rate-service" in ch.played and "zh/thanks-rating" in ch.played
    assert store.events == [(UID, "satisfaction", {"rating": 4, "agent_id": "7", "tickets": []})]
    assert room.calls[-2:] == [("leaving", WaitState.ANSWERED), ("left", WaitState.ANSWERED, None)]


async def test_a_caller_number_that_is_not_plain_digits_is_not_passed_on_to_the_agents_phone() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(caller_id="138\r\n${SHELL}", variables={"DIALSTATUS": "ANSWER"})
    room = Room(store, first=[MakeOffer(offer())])
    await run(ch, room, store, satisfaction_survey=False)
    assert ("set_variable", "CALLERID(num)", "+8613800138000") in ch.ops
    plain = FakeChannel(variables={"DIALSTATUS": "ANSWER"})
    await run(plain, Room(store, first=[MakeOffer(offer())]), store, satisfaction_survey=False)
    assert not any(op[:2] == ("set_variable", "CALLERID(num)") for op in plain.ops)


async def test_an_unanswered_offer_goes_back_to_music_and_the_next_offer_is_rung() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(variables={"DIALSTATUS": "NOANSWER"})
    room = Room(store, first=[MakeOffer(offer(1))])
    room.after_dial = [NoAgentAvailable(UID, UID, "no_agents")]
    outcome, w = await run(ch, room, store)
    assert outcome is Outcome.MESSAGE
    assert room.named("dial_returned") == [("dial_returned", f"{UID}#1", "NOANSWER")]
    # after the missed offer the caller hears music again, then why nobody can answer
    assert ops(ch).count("music_on") == 2
    assert ch.played[-1] == "zh/no-agents"
    assert room.named("withdraw") == [("withdraw", WithdrawReason.NO_AGENTS)]
    assert room.calls[-1] == ("left", WaitState.WAITING, None)


class HandingOverRoom(Room):
    """Call distribution stops on this node (another node leads now) at the moment given."""

    def __init__(self, store: FakeTicketStore, *, when: str, **kw) -> None:
        super().__init__(store, **kw)
        self.when = when

    def enter(self, w: Waiter) -> None:
        super().enter(w)
        if self.when == "waiting":
            w.hand_over()

    def dial_returned(self, w: Waiter, o: Offer, status, written_at) -> bool:
        if self.when == "dialling":  # told while the agent's phone rang; the next offer is already queued
            w.hand_over()
            w.deliver(MakeOffer(offer(2)))
        return super().dial_returned(w, o, status, written_at)


async def test_a_caller_handed_over_leaves_for_the_dialplan_queue_before_any_offer_already_queued() -> None:
    store = FakeTicketStore()
    ch = FakeChannel()
    room = HandingOverRoom(store, when="waiting", first=[MakeOffer(offer(1))])
    outcome, w = await run(ch, room, store)
    assert outcome is Outcome.AGENT  # the IVR leaves CC_RESULT unset: the dialplan's fallback queue
    assert not any(op[0] == "exec" for op in ch.ops) and not room.named("take_offer")
    assert room.named("withdraw") == [("withdraw", WithdrawReason.OTHER)]
    assert ops(ch)[-1] == "music_off" and w.handed_over


async def test_a_ring_in_progress_is_not_cut_by_a_hand_over_but_the_next_offer_is_not_rung() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(variables={"DIALSTATUS": "NOANSWER"})
    room = HandingOverRoom(store, when="dialling", first=[MakeOffer(offer(1))])
    outcome, _ = await run(ch, room, store)
    assert outcome is Outcome.AGENT
    assert [op for op in ch.ops if op[0] == "exec"] == [("exec", "Dial", "PJSIP/agent1", "10")]
    assert room.named("dial_returned") == [("dial_returned", f"{UID}#1", "NOANSWER")]
    assert room.named("withdraw") == [("withdraw", WithdrawReason.OTHER)]


async def test_an_offer_taken_back_before_its_turn_is_not_dialled() -> None:
    store = FakeTicketStore()
    ch = FakeChannel()
    room = Room(store, first=[MakeOffer(offer(1)), MaxWaitReached(UID, UID, 600.0)], cancelled={f"{UID}#1"})
    outcome, _ = await run(ch, room, store)
    assert outcome is Outcome.MESSAGE
    assert not any(op[0] == "exec" for op in ch.ops)
    assert ch.played == ["zh/max-wait-reached"]
    assert room.named("withdraw") == [("withdraw", WithdrawReason.MAX_WAIT)]


async def test_night_service_tells_the_caller_the_centre_is_closed() -> None:
    store = FakeTicketStore()
    ch = FakeChannel()
    room = Room(store, first=[NoAgentAvailable(UID, UID, "closed")])
    outcome, _ = await run(ch, room, store)
    assert outcome is Outcome.MESSAGE and ch.played == ["zh/closed-hours"]
    assert room.named("withdraw") == [("withdraw", WithdrawReason.CLOSED)]


@pytest.mark.parametrize("status, outcome, room_call", [
    ("ANSWER", Outcome.DONE, ("on_duty_answered",)),
    ("NOANSWER", Outcome.MESSAGE, ("withdraw", WithdrawReason.CLOSED)),
])
async def test_an_emergency_at_night_rings_the_on_duty_phone(status, outcome, room_call) -> None:
    store = FakeTicketStore()
    ch = FakeChannel(variables={"DIALSTATUS": status})
    room = Room(store, first=[RingOnDuty(UID, UID, "PJSIP/duty")])
    got, w = await run(ch, room, store)
    assert got is outcome
    assert ("exec", "Dial", "PJSIP/duty", "30") in ch.ops  # at least 30 s, not two rings
    assert room_call in room.calls
    assert w.state is (WaitState.ANSWERED if status == "ANSWER" else WaitState.WAITING)


async def test_the_announcement_gives_position_expected_wait_and_the_call_back_key() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(inputs=[""] * 20)  # silence through every announced file
    room = Room(store, first=[Announce(UID, UID, 3, 150.0), MaxWaitReached(UID, UID, 600.0)])
    await run(ch, room, store)
    i = ch.played.index("zh/queue-position")
    announced = ch.played[i:ch.played.index("zh/max-wait-reached")]
    assert "zh/queue-expected-wait" in announced and "zh/minutes-word" in announced
    assert announced[-1] == "zh/callback-offer"
    # each file can be cut short by the call-back key or by the digit the server presses for an offer
    plays = [op for op in ch.ops if op[0] == "play" and op[1][0] in announced]
    assert all(op[1] == [op[1][0]] for op in plays)  # file by file
    assert interrupt_digit("1") == "#" and interrupt_digit("#") == "*"


async def test_pressing_the_call_back_key_books_a_ticket_before_the_caller_hears_it() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(inputs=["", "1"])  # silence on the first file, then the key
    room = Room(store, first=[Announce(UID, UID, 2, None)])
    outcome, w = await run(ch, room, store)
    assert outcome is Outcome.DONE and w.state is WaitState.CALLBACK
    [t] = store.tickets
    # booked (ticket saved) first, then "we will call you back", then marked as told, then goodbye
    assert room.named("book_callback") == [("book_callback",)]
    assert ch.played[-2:] == ["zh/callback-registered", "zh/goodbye"]
    assert store.acknowledged == [t.id]
    assert room.calls[-1] == ("left", WaitState.CALLBACK, None)


async def test_a_caller_without_a_diallable_number_is_not_offered_a_call_back() -> None:
    store = FakeTicketStore()
    ch = FakeChannel(caller_id="anonymous", inputs=[""] * 10)
    w = Waiter(ch=ch, call=caller(ch, caller_id=None), entered_mono=0.0)
    room = Room(store, first=[Announce(UID, UID, 1, None), CALLBACK_KEY, MaxWaitReached(UID, UID, 600.0)])
    outcome = await asyncio.wait_for(WaitScript(w, room, ACDConfig(), FakeClock(), store).run(), 5)
    assert outcome is Outcome.MESSAGE
    assert "zh/callback-offer" not in ch.played
    assert room.named("book_callback") == []  # the key seen on AMI is ignored too


async def test_a_call_back_that_cannot_be_saved_is_not_promised_and_the_caller_keeps_waiting() -> None:
    store = FakeTicketStore()
    ch = FakeChannel()
    # the key arrives on AMI twice (the press and its echo): one booking attempt, the echo is dropped
    room = Room(store, first=[CALLBACK_KEY, CALLBACK_KEY, MaxWaitReached(UID, UID, 600.0)], ticket_fails=True)
    outcome, w = await run(ch, room, store)
    assert outcome is Outcome.MESSAGE
    assert room.named("book_callback") == [("book_callback",)]
    assert "zh/callback-registered" not in ch.played
    assert ch.played == ["zh/apology", "zh/please-wait", "zh/max-wait-reached"]
    assert w.state is WaitState.WAITING


async def test_an_offer_arriving_during_the_announcement_stops_it_before_the_next_file() -> None:
    store = FakeTicketStore()

    class Interrupted(FakeChannel):
        async def play(self, prompts, escape_digits=""):
            result = await super().play(prompts, escape_digits)
            if prompts == ["zh/queue-position"]:
                assert w.state is WaitState.ANNOUNCING
                assert w.deliver(MakeOffer(offer())) is True  # the adapter is told to cut it short
            return result

    ch = Interrupted(inputs=[""] * 10, variables={"DIALSTATUS": "ANSWER"})
    w = Waiter(ch=ch, call=caller(ch), entered_mono=0.0)
    room = Room(store, first=[Announce(UID, UID, 5, 600.0)])
    outcome = await asyncio.wait_for(WaitScript(w, room, ACDConfig(satisfaction_survey=False), FakeClock(), store).run(), 5)
    assert outcome is Outcome.DONE
    assert ch.played == ["zh/queue-position"]  # not the number, the wait or the call-back offer
    assert ("exec", "Dial", "PJSIP/agent1", "10") in ch.ops


async def test_a_caller_who_hangs_up_during_the_dial_is_reported_with_the_dial_status_read_after() -> None:
    store = FakeTicketStore()

    class HangsUpInDial(FakeChannel):
        async def exec(self, application, *args):
            self._hung_up = True
            self.variables["DIALSTATUS"] = "CANCEL"
            raise CallerHungUp()

    ch = HangsUpInDial()
    room = Room(store, first=[MakeOffer(offer())])
    with pytest.raises(CallerHungUp):
        await run(ch, room, store)
    # DIALSTATUS is read on the dead channel, and the room hears of the offer that was being dialled
    assert ch.ops[-1] == ("get_variable", "DIALSTATUS")
    assert room.calls[-1] == ("left", WaitState.DIALLING, "CANCEL")


def test_wait_states_change_only_by_named_transitions() -> None:
    ch = FakeChannel()
    w = Waiter(ch=ch, call=caller(ch), entered_mono=0.0)
    with pytest.raises(IllegalWaitTransition, match="cannot answered while waiting"):
        w.go("answered")  # only a Dial in progress can be answered
    w.go("dial_written")
    with pytest.raises(IllegalWaitTransition):
        w.go("callback_booked")  # no call-back while ringing an agent
    w.go("answered")
    with pytest.raises(IllegalWaitTransition):
        w.go("left")  # an answered caller does not leave the queue unanswered
    assert w.state is WaitState.ANSWERED


def test_each_wait_transition_is_one_log_line_with_the_uniqueid() -> None:
    ch = FakeChannel()
    with captured_logs() as logs:
        w = Waiter(ch=ch, call=caller(ch), entered_mono=0.0)  # its logger is bound when it is made
        w.go("announcement_started")
        w.go("announcement_ended")
    changes = [e for e in logs if e["event"] == "caller wait state changed"]
    assert [(e["transition"], e["from_state"], e["to_state"], e["uniqueid"]) for e in changes] == [
        ("announcement_started", "waiting", "announcing", UID),
        ("announcement_ended", "announcing", "waiting", UID),
    ]


def test_waiter_counts_offers_in_its_inbox() -> None:
    ch = FakeChannel()
    w = Waiter(ch=ch, call=caller(ch, owner=owner()), entered_mono=0.0)
    assert w.deliver(Announce(UID, UID, 1, None)) is False
    assert w.deliver(MakeOffer(offer())) is False  # not announcing: nothing to cut short
    assert w.offers_queued == 1
    w.deliver(CALLBACK_KEY)
    w.discard_callback_keys()
    assert [type(i).__name__ for i in (w.inbox.get_nowait(), w.inbox.get_nowait())] == ["Announce", "MakeOffer"]
    assert w.inbox.empty() and w.call.who == "owner:1"

