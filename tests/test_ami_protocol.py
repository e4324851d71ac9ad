"""Pure AMI helpers: sanitising (injection), encoding, parsing, tolerant field readers."""

from __future__ import annotations

from pathlib import Path

import pytest
from ami_replay import capture_events
from captures import from_asterisk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panoramisk.message import Message

from callcentre.ami.protocol import (
    AMIMessage,
    AMIValueRejected,
    encode_action,
    field,
    field_int,
    known,
    parse_duration,
    parse_message,
    sanitise_action,
)


@pytest.mark.parametrize(
    "action, reason",
    [
        ({"Action": "Hangup", "Channel": "SIP/a\r\n\r\nAction: Originate"}, "CR"),
        ({"Action": "Hangup", "Channel": "SIP/a\nAction: x"}, "LF"),
        ({"Action": "Hangup", "Channel": "SIP/a\x00"}, "NUL"),
        ({"Action": "Originate", "Variable": ["A=1", "B=2\r\nAction: Hangup"]}, "CR"),
        ({"Action": "Hangup", "Channel\r\nX": "a"}, "invalid action key"),
        ({"Action": "Hangup", "Chan nel": "a"}, "invalid action key"),
        ({"Action": "Hangup", "Channel": "x" * 17}, "limit is 16"),
        ({"Action": ""}, "Action is missing"),
        ({"Channel": "SIP/a"}, "Action is missing"),
        ({"Action": "Hang up"}, "plain action name"),
        ({"Action": "Hangup", "Channel": ["a", "b"]}, "only Variable"),
        ({"Action": "Hangup", "Channel": "a", "channel": "b"}, "given twice"),
        ({"Action": "Hangup", "Channel": None}, "must be text"),
    ],
)
def test_sanitise_rejects(action, reason) -> None:
    with pytest.raises(AMIValueRejected, match=reason):
        sanitise_action(action, 16)


def test_rejection_is_a_value_error() -> None:
    assert issubclass(AMIValueRejected, ValueError)


def test_sanitise_accepts_and_copies() -> None:
    original = {"Action": "Originate", "Async": True, "Priority": 1, "Variable": ["A=1", "B=2"]}
    clean = sanitise_action(original, 64)
    assert clean == {"Action": "Originate", "Async": "true", "Priority": "1", "Variable": ["A=1", "B=2"]}
    assert clean is not original


def test_encode_matches_the_captured_wire_form() -> None:
    action = sanitise_action(
        {"Channel": "Local/8200@capture-connect", "ActionID": "orig-2", "Action": "Originate", "Variable": ["A=1", "B=2"]},
        1024,
    )
    assert encode_action(action) == (
        b"Action: Originate\r\nActionID: orig-2\r\nChannel: Local/8200@capture-connect\r\n"
        b"Variable: A=1\r\nVariable: B=2\r\n\r\n"
    )


def test_encode_ping_is_byte_exact_with_capture() -> None:
    assert encode_action({"Action": "Ping", "ActionID": "ping-1"}) == b"Action: Ping\r\nActionID: ping-1\r\n\r\n"


def test_parse_message_event_response_and_fragment() -> None:
    msg = parse_message("Response: Success\r\nActionID: ping-1\r\nPing: Pong\r\nTimestamp: 1795352049.732148\r\n\r\n")
    assert msg is not None and msg["ping"] == "Pong" and msg.success
    ev = parse_message("Event: Hangup\r\nUniqueid: 1.2\r\nCause-txt: Normal Clearing")
    assert ev is not None and ev["Cause-txt"] == "Normal Clearing"
    assert parse_message("Value: \r\n") is None
    assert parse_message("") is None
    assert parse_message("garbage without colon") is None


def test_field_helpers_are_tolerant() -> None:
    ev = {"Event": "OriginateResponse", "uniqueid": "<unknown>", "Reason": "4", "Variable": ["A", "B"], "Bad": "x"}
    assert field(ev, "Uniqueid") == "<unknown>"
    assert known(field(ev, "Uniqueid")) is None
    assert known(" 1.2 ") == "1.2"
    assert field(ev, "Variable") == "B"
    assert field(ev, "Missing", "d") == "d"
    assert field_int(ev, "Reason") == 4
    assert field_int(ev, "Bad") is None
    assert field_int(ev, "Missing") is None
    assert parse_duration("00:01:05") == 65.0
    assert parse_duration("bad") is None


def test_every_captured_message_parses() -> None:
    for name in ("ami-dial-agents.txt", "ami-queue-abandon-and-errors.txt", "ami-originate-outcomes.txt"):
        for _, fields in capture_events(name):
            block = "\r\n".join(f"{k}: {v}" for k, v in fields.items())
            msg = parse_message(block)
            assert msg is not None
            assert (msg.get("Event") or msg.get("Response")) == (fields.get("Event") or fields.get("Response"))


def _same_as_library(block: str) -> None:
    """Our parse equals panoramisk's ``Message.from_line`` on the same text: whole, and header by header."""
    ours = parse_message(block)
    text = block.strip("\r\n")
    theirs = Message.from_line(text) if text else None
    if theirs is None:
        assert ours is None, block
        return
    assert isinstance(ours, Message), block
    names = {n for key in theirs for n in (key, key.lower(), key.upper())}
    names |= {"Missing", "missing", "EVENT", "actionid", "Event", "Uniqueid", "content", "Result", "a: b", "x\r\ny"}
    for name in sorted(names):
        fresh = parse_message(block)
        assert fresh.get(name, "d") == theirs.get(name, "d"), (block, name)
        assert field(parse_message(block), name, "d") == field(theirs, name, "d"), (block, name)
        assert (name in parse_message(block)) == (name in theirs), (block, name)
    assert list(ours.items()) == list(theirs.items()), block
    assert ours._store == theirs._store, block  # noqa: SLF001 - the very structure the look-ups use
    assert ours.content == theirs.content and ours.manager is None


def test_parse_message_equals_the_library_on_every_captured_message() -> None:
    names = sorted(p.name for p in (Path(__file__).parent / "fixtures").glob("ami-*.txt"))
    assert len(names) > 10
    blocks = 0
    for name in names:
        for block in from_asterisk(name).decode("utf-8", "replace").split("\r\n\r\n"):
            _same_as_library(block)
            blocks += 1
    assert blocks > 1000


@pytest.mark.parametrize("block", [
    "Response: Follows\r\nActionID: 1\r\nOutput: x\r\n--END COMMAND--",  # a body: the library's own rules
    "Response: Fail\r\nMessage: no",
    "Event: VarSet\r\nVariable: A\r\nVariable: B\r\nVariable: C",  # repeated: a list
    "Event: X\r\nvariable: a\r\nVariable: b",  # one header in two cases
    "Event: X\r\nContent: mine",  # the library's own 'content' wins
    "event: lower-case name only",  # neither Event nor Response as the library spells them
    "Response: Success\r\nResult: %20quoted%21 ",
    "Event: X\r\n: empty key\r\nno separator\r\nKey:no space",
    "Event: A\r\nEVENT: B",  # the name on two lines, in two cases
    "Event: Hangup\r\nCause-txt: Normal\r\nUniqueid: 1.2\r\nuniqueid: 1.3",
    "Event: VarSet\r\nValue: a: b\r\nVariable: x\rcontinued\nstill",  # lone CR and LF stay in a line
    "Event: Newchannel\r\nCallerIDName: 张伟\r\nUniqueid: 9.9",  # not ASCII: parsed at once
    "Event: X\r\nResult: %41\r\nContent: c",
])
def test_parse_message_equals_the_library_on_odd_messages(block: str) -> None:
    _same_as_library(block)


_LINE = st.one_of(
    st.tuples(st.sampled_from(["Event", "Response", "ActionID", "Variable", "variable", "Result", "Content", "Uniqueid",
                               "Channel", "content", "EVENT", ""]), st.text(max_size=12)).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=8).map("\r\n".join))
def test_parse_message_equals_the_library_on_generated_messages(block: str) -> None:
    _same_as_library(block)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="abEvntIDU: \r\n", max_size=10), st.lists(_LINE, max_size=8).map("\r\n".join))
def test_parse_message_equals_the_library_on_generated_events(name: str, rest: str) -> None:
    _same_as_library(f"Event: {name}\r\n{rest}")


def test_parsed_messages_are_the_fast_kind() -> None:
    msg = parse_message("Event: Newstate\r\nUniqueid: 1.2\r\nChannelStateDesc: Up")
    assert type(msg) is AMIMessage
    assert list(msg) == ["Event", "Uniqueid", "ChannelStateDesc", "content"]
    assert msg.event == "Newstate" and msg.get("UNIQUEID") == "1.2" and msg.get("absent", "d") == "d"
    assert field(msg, "channelstatedesc") == "Up" and field(msg, "Absent", "x") == "x"
