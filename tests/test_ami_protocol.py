"""Pure AMI helpers: sanitising (injection), encoding, parsing, tolerant field readers."""

from __future__ import annotations

import pytest
from ami_replay import capture_events

from callcentre.ami.protocol import (
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
