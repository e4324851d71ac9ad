"""CallTracker replayed over every real AMI capture, plus resync, restart, hooks and pruning."""

from __future__ import annotations

import pytest
from ami_replay import capture_events

from callcentre.ami.calls import LOST_IN_RESTART, LOST_IN_RESYNC, CallListener, CallState, CallTracker

ALL_AMI_CAPTURES = [
    "ami-asterisk-restart.txt",
    "ami-bad-login.txt",
    "ami-dial-agents.txt",
    "ami-ivr-commands.txt",
    "ami-originate-outcomes.txt",
    "ami-queue-abandon-and-errors.txt",
    "ami-queue-connect-and-agi-failure.txt",
    "ami-sip-call.txt",
    # recorded by tools/record_captures.py (tests/fixtures/README-captures.md)
    "ami-answer-local.txt",
    "ami-dial-unreachable.txt",
    "ami-ami-hangup-ringing-leg.txt",
    "ami-ami-hangup-ringing-phone.txt",
    "ami-hangup-during-answer.txt",
    "ami-hangup-during-exec-dial.txt",
]


class Recorder(CallListener):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def dial_begin(self, caller_uniqueid, dest_uniqueid, dest_channel, at):
        self.calls.append(("dial_begin", caller_uniqueid, dest_uniqueid, dest_channel, at))

    def dial_end(self, caller_uniqueid, dest_uniqueid, dial_status, at):
        self.calls.append(("dial_end", caller_uniqueid, dest_uniqueid, dial_status, at))

    def hangup(self, uniqueid, cause, at):
        self.calls.append(("hangup", uniqueid, cause, at))

    def dtmf(self, uniqueid, digit, at):
        self.calls.append(("dtmf", uniqueid, digit, at))

    def originate_response(self, action_id, response, reason, uniqueid, at):
        self.calls.append(("originate_response", action_id, response, reason, uniqueid, at))

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


def replay(name: str) -> tuple[CallTracker, Recorder]:
    tracker = CallTracker()
    rec = Recorder()
    tracker.add_listener(rec)
    for at, event in capture_events(name):
        tracker.feed(event, at)
    return tracker, rec


@pytest.mark.parametrize("name", ALL_AMI_CAPTURES)
def test_every_capture_replays_without_error(name: str) -> None:
    tracker, _ = replay(name)
    for record in tracker.records():
        assert record.uniqueid and record.channel


def test_dial_unreachable_only_the_dead_sip_peer_and_the_refusing_phones_are_dials() -> None:
    """Missing peer / technology / context / extension: no DialBegin, so no dial for the tracker."""
    _, rec = replay("ami-dial-unreachable.txt")
    agi_dials = [c for c in rec.of("dial_end") if not c[3] == "ANSWER"]
    assert [c[3] for c in agi_dials] == ["NOANSWER", "CONGESTION", "BUSY"]
    assert [c[3].split("-")[0] for c in rec.of("dial_begin") if "capture-agi" not in c[3]] == [
        "SIP/deadpeer", "Local/agent9@cc", "Local/agent7@cc"]


@pytest.mark.parametrize("name", ["ami-ami-hangup-ringing-leg.txt", "ami-ami-hangup-ringing-phone.txt"])
def test_ami_hangup_of_ringing_leg_is_a_noanswer_dial_end(name: str) -> None:
    """The DialEnd event says NOANSWER (DIALSTATUS, on the AGI side, says CHANUNAVAIL)."""
    _, rec = replay(name)
    ends = [c for c in rec.of("dial_end") if c[3] != "ANSWER"]
    assert [c[3] for c in ends] == ["NOANSWER"]


def test_dial_agents_two_attempts_noanswer_then_answer() -> None:
    tracker, rec = replay("ami-dial-agents.txt")
    caller = tracker.get("1795352104.9")
    assert caller is not None and caller.channel == "Local/8200@capture-connect-00000004;2"
    assert caller.caller_id_num == "02888881234"
    assert caller.dtmf == "4"
    assert [d.dial_status for d in caller.dials] == ["NOANSWER", "ANSWER"]
    assert [d.dest_channel for d in caller.dials] == [
        "Local/agent2@sim-agents-00000005;1",
        "Local/agent1@sim-agents-00000006;1",
    ]
    # Ring time from DialBegin to DialEnd on our clock: 4 s ring timeout, agent1 answers after 3 s.
    assert caller.dials[0].ring_seconds == pytest.approx(4.0, abs=0.05)
    assert caller.dials[1].ring_seconds == pytest.approx(3.0, abs=0.05)
    assert caller.local_peer == "1795352104.8"
    assert tracker.get("1795352104.8").local_peer == "1795352104.9"
    assert caller.bridges == ["6d8185c9-a61e-4d4e-aa42-638b51ca6e5e"]
    agent1 = tracker.get("1795352112.12")
    assert agent1.state is CallState.HUNG_UP and agent1.hangup_cause == 16
    assert agent1.hangup_cause_text == "Normal Clearing"
    assert tracker.get("1795352108.10").hangup_cause == 0
    ends = [c[3] for c in rec.of("dial_end") if c[1] == "1795352104.9"]
    assert ends == ["NOANSWER", "ANSWER"]
    assert ("dtmf", "1795352104.9", "4") == rec.of("dtmf")[0][:3]


def test_sip_call_dial_answer_and_stale_tail_ignored() -> None:
    tracker, rec = replay("ami-sip-call.txt")
    owner = tracker.get("1795354756.2")
    assert owner.channel == "SIP/owner-phone-00000002"
    assert (owner.caller_id_num, owner.caller_id_name) == ("13800138000", "Zhang San")
    assert owner.dtmf == "4"
    # The capture ends with a replayed copy of the DialBegin for a channel already hung up: ignored.
    assert len(owner.dials) == 1
    dial = owner.dials[0]
    assert (dial.dest_channel, dial.dial_status) == ("SIP/agent3-00000003", "ANSWER")
    assert dial.ring_seconds == pytest.approx(3.0, abs=0.05)
    agent = tracker.get("1795354759.3")
    assert agent.state is CallState.HUNG_UP and agent.hangup_cause == 16
    assert len(rec.of("dial_begin")) == 1
    assert tracker.ignored >= 1  # the fragment message with only "Value: "


def test_originate_outcomes_reasons() -> None:
    tracker, rec = replay("ami-originate-outcomes.txt")
    outcomes = {c[1]: (c[2], c[3], c[4]) for c in rec.of("originate_response")}
    assert outcomes == {
        "cb-noanswer": ("Failure", 3, None),
        "cb-busy": ("Failure", 5, None),
        "cb-nosuch": ("Failure", 0, None),
        "cb-answered": ("Success", 4, "1795354647.66"),
    }
    assert tracker.originate_outcome("cb-answered").reason == 4
    # The busy line hangs up with cause 17; the unanswered agent with 19.
    assert tracker.get("1795354646.63").hangup_cause == 17
    assert tracker.get("1795354645.60").hangup_cause == 19
    # An Originate's dial has no caller channel.
    answered = [c for c in rec.of("dial_end") if c[2] == "1795354647.66"]
    assert answered == [("dial_end", None, "1795354647.66", "ANSWER", answered[0][4])]


def test_queue_abandon_and_duplicate_dial_end() -> None:
    tracker, rec = replay("ami-queue-abandon-and-errors.txt")
    first = tracker.get("1795352146.15")
    second = tracker.get("1795352147.19")
    assert first.queue == second.queue == "support"
    assert first.abandoned and first.abandon_hold_seconds == 26
    assert second.abandoned and second.abandon_hold_seconds == 5
    # app_queue sends NOANSWER then CANCEL for one attempt: the first status counts, once.
    assert [d.dial_status for d in first.dials] == ["NOANSWER", "NOANSWER", "CANCEL"]
    assert first.dials[0].ring_seconds == pytest.approx(10.0, abs=0.05)
    assert len([c for c in rec.of("dial_end") if c[1] == "1795352146.15"]) == 3
    assert not tracker.open_calls()


def test_queue_connect_and_agi_failure() -> None:
    tracker, rec = replay("ami-queue-connect-and-agi-failure.txt")
    caller = tracker.get("1795352193.25")
    assert caller.queue == "support" and not caller.abandoned
    assert [d.dial_status for d in caller.dials] == ["ANSWER"]
    assert caller.dials[0].ring_seconds == pytest.approx(2.0, abs=0.05)
    assert tracker.originate_outcome("orig-5").reason == 0
    assert not tracker.open_calls()


def test_ivr_call_dtmf_digits() -> None:
    tracker, _ = replay("ami-ivr-commands.txt")
    assert tracker.get("1795351990.1").dtmf == "12"
    assert tracker.get("1795351990.1").hangup_cause == 16


def _newchannel(uid: str, channel: str = "SIP/a-1") -> dict[str, str]:
    return {"Event": "Newchannel", "Channel": channel, "Uniqueid": uid, "Linkedid": uid, "ChannelStateDesc": "Ring"}


def test_malformed_and_unknown_events_are_tolerated() -> None:
    tracker = CallTracker()
    for junk in ({}, {"Value": ""}, {"Event": "Hangup"}, {"Event": "DialEnd", "DialStatus": "ANSWER"},
                 {"Event": "NoSuchEvent", "Foo": "bar"}, {"Event": "Newstate", "Uniqueid": "<unknown>"},
                 {"Event": "DTMFEnd", "Uniqueid": "1.1", "Digit": ""}, {"Event": "FullyBooted", "Uptime": "x"}):
        tracker.feed(junk, 1.0)
    assert tracker.records() == []
    assert tracker.ignored >= 5


def test_fully_booted_uptime_zero_closes_every_call() -> None:
    tracker = CallTracker()
    rec = Recorder()
    tracker.add_listener(rec)
    tracker.feed({"Event": "FullyBooted", "Uptime": "2352"}, 0.0)
    tracker.feed(_newchannel("1.1"), 1.0)
    tracker.feed({"Event": "FullyBooted", "Uptime": "2360"}, 9.0)  # a reconnect, not a restart
    assert tracker.get("1.1").state is CallState.RINGING
    for at, event in capture_events("ami-asterisk-restart.txt"):
        tracker.feed(event, 10.0 + at)
    record = tracker.get("1.1")
    assert record.state is CallState.LOST and record.closed_reason == LOST_IN_RESTART
    assert ("hangup", "1.1", None) == rec.of("hangup")[0][:3]


def test_resync_drops_phantoms_and_adds_missing() -> None:
    tracker = CallTracker()
    rec = Recorder()
    tracker.add_listener(rec)
    tracker.feed(_newchannel("1.1"), 1.0)
    tracker.feed(_newchannel("1.2", "SIP/b-2"), 1.0)
    channels = [
        {"Event": "CoreShowChannel", "ActionID": "x", "Channel": "SIP/b-2", "Uniqueid": "1.2",
         "ChannelStateDesc": "Up", "Duration": "00:00:09"},
        {"Event": "CoreShowChannel", "ActionID": "x", "Channel": "SIP/c-3", "Uniqueid": "1.3",
         "Linkedid": "1.2", "CallerIDNum": "13800138000", "ChannelStateDesc": "Up", "Duration": "00:01:05"},
        {"Event": "CoreShowChannelsComplete", "ActionID": "x", "EventList": "Complete", "ListItems": "2"},
    ]
    tracker.resync(channels, 100.0)
    assert tracker.get("1.1").state is CallState.LOST
    assert tracker.get("1.1").closed_reason == LOST_IN_RESYNC
    assert tracker.get("1.2").state is CallState.UP
    added = tracker.get("1.3")
    assert added.created_at == pytest.approx(35.0) and added.caller_id_num == "13800138000"
    assert {r.uniqueid for r in tracker.open_calls()} == {"1.2", "1.3"}
    assert rec.of("hangup") == [("hangup", "1.1", None, 100.0)]


def test_resync_with_real_core_show_channels() -> None:
    events = capture_events("ami-dial-agents.txt")
    listing = [e for _, e in events if e.get("ActionID") == "csc-2" and "Event" in e]
    tracker = CallTracker()
    tracker.feed(_newchannel("9.9"), 1.0)
    tracker.resync(listing, 2.0)
    assert len(tracker.open_calls()) == 4
    assert tracker.get("9.9").state is CallState.LOST


def test_finished_records_are_pruned() -> None:
    tracker = CallTracker(max_finished=10, finished_ttl_seconds=60.0)
    for i in range(50):
        uid = f"1.{i}"
        tracker.feed(_newchannel(uid), float(i))
        tracker.feed({"Event": "Hangup", "Uniqueid": uid, "Channel": "SIP/a-1", "Cause": "16"}, float(i))
    assert len(tracker.finished_calls()) == 10
    tracker.feed({"Event": "Newexten"}, 1000.0)
    assert tracker.finished_calls() == []


def test_a_failing_listener_does_not_stop_the_others() -> None:
    class Broken(CallListener):
        def hangup(self, uniqueid, cause, at):
            raise RuntimeError("boom")

    tracker = CallTracker()
    tracker.add_listener(Broken())
    rec = Recorder()
    tracker.add_listener(rec)
    tracker.feed(_newchannel("1.1"), 1.0)
    tracker.feed({"Event": "Hangup", "Uniqueid": "1.1", "Channel": "SIP/a-1", "Cause": "17"}, 2.0)
    assert rec.of("hangup") == [("hangup", "1.1", 17, 2.0)]
