"""callcentre/domain/queue_log.py against what app_queue itself wrote on the real Asterisk 20.20.1.

tests/fixtures/queue_log-*.txt hold the bytes app_queue appended to its queue_log during one scenario
each (tools/record_captures.py, tests/fixtures/README-captures.md). Every line must round-trip through
the model byte for byte, and each constructor, given the values the scenario had (seconds waited, ring
time, positions ...), must write exactly app_queue's line. Epoch and uniqueids are taken from the line
(they only say when the capture ran); every other field is stated in the table.
"""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from callcentre.domain import queue_log as ql
from callcentre.domain.queue_log import QueueLogEvent as E
from tests.captures import FIXTURES, read_capture

QUEUE_LOG_FILES = sorted(p.name for p in FIXTURES.glob("queue_log-*.txt") if not p.name.endswith("-ami.txt"))


def fixture_lines(name: str) -> list[str]:
    data = (FIXTURES / name).read_bytes()
    assert data.endswith(b"\n"), name
    return [line + "\n" for line in data.decode("utf-8").split("\n")[:-1]]


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def test_there_are_captures_of_every_event_we_claim_to_have_seen() -> None:
    seen = {ql.parse_line(line).event for name in QUEUE_LOG_FILES for line in fixture_lines(name)}
    # EXITEMPTY: layout from app_queue's source only; QUEUESTART: written at boot, in a note (test below)
    assert seen == set(E) - {E.EXITEMPTY, E.QUEUESTART}


@pytest.mark.parametrize("name", QUEUE_LOG_FILES)
def test_every_app_queue_line_round_trips_byte_exact(name: str) -> None:
    for line in fixture_lines(name):
        entry = ql.parse_line(line)
        assert ql.format_line(entry) == line
        assert ql.format_line(entry).encode("utf-8") in (FIXTURES / name).read_bytes()


# (fixture, which line (0-based), build(epoch, callid) -> entry). Values from the scenario, as app_queue saw it.
Build = Callable[[int, str], ql.QueueLogEntry]
Q, Q1, Q2, Q3 = "hotline-fallback", "Agent Q1", "Agent Q2", "Agent Q3"
RINGALL = "queue_log-ringnoanswer-connect-completecaller.txt"
TABLE: list[tuple[str, int, Build]] = [
    # member administration over AMI: interface as agent, callid MANAGER, empty data (trailing '|')
    ("queue_log-members.txt", 0, lambda t, c: ql.add_member(at(t), Q, "Local/agentq1@cc-test-phones/n")),
    ("queue_log-members.txt", 2, lambda t, c: ql.pause(at(t), Q, Q1, reason="lunch")),
    ("queue_log-members.txt", 3, lambda t, c: ql.unpause(at(t), Q, Q1)),
    ("queue_log-members.txt", 4, lambda t, c: ql.pause(at(t), Q, Q1)),
    ("queue_log-members.txt", 5, lambda t, c: ql.unpause(at(t), Q, Q1, reason="back")),
    ("queue_log-members.txt", 6, lambda t, c: ql.pause_all(at(t), "Local/agentq9@cc-test-phones/n", reason="break")),
    ("queue_log-members.txt", 8, lambda t, c: ql.unpause_all(at(t), "Local/agentq9@cc-test-phones/n")),
    ("queue_log-members.txt", 10, lambda t, c: ql.remove_member(at(t), Q, "Local/agentq1@cc-test-phones/n")),
    # a call: entering with a URL, a ring round nobody answered, the answer, the caller hangs up
    (RINGALL, 1, lambda t, c: ql.enter_queue(at(t), c, Q, caller_number="13800138000", position=1,
                                             url="https://desk.example/pop?call=1")),
    (RINGALL, 2, lambda t, c: ql.ring_no_answer(at(t), c, Q, Q1, ring_ms=15000)),
    (RINGALL, 4, lambda t, c: ql.connect(at(t), c, Q, Q2, hold_seconds=19, member_uniqueid="1796543573.46",
                                         ring_seconds=2)),
    (RINGALL, 5, lambda t, c: ql.complete_caller(at(t), c, Q, Q2, hold_seconds=19, talk_seconds=4,
                                                 original_position=1)),
    # one agent at a time for two rings, like our distribution
    ("queue_log-linear.txt", 3, lambda t, c: ql.ring_no_answer(at(t), c, "hotline-linear", Q1, ring_ms=10000)),
    ("queue_log-linear.txt", 4, lambda t, c: ql.connect(at(t), c, "hotline-linear", Q2, hold_seconds=13,
                                                        member_uniqueid="1796543592.54", ring_seconds=2)),
    ("queue_log-completeagent.txt", 3, lambda t, c: ql.complete_agent(at(t), c, Q, Q3, hold_seconds=2,
                                                                      talk_seconds=4, original_position=1)),
    ("queue_log-abandon.txt", 2, lambda t, c: ql.ring_canceled(at(t), c, Q, Q1, ring_ms=6010)),
    ("queue_log-abandon.txt", 3, lambda t, c: ql.abandon(at(t), c, Q, position=1, original_position=1,
                                                         wait_seconds=6)),
    ("queue_log-positions.txt", 3, lambda t, c: ql.enter_queue(at(t), c, Q, caller_number="13700137000",
                                                               position=2)),
    ("queue_log-positions.txt", 5, lambda t, c: ql.abandon(at(t), c, Q, position=1, original_position=2,
                                                           wait_seconds=6)),
    ("queue_log-exitwithkey.txt", 3, lambda t, c: ql.exit_with_key(at(t), c, "hotline-keys", key="5", position=1,
                                                                   original_position=1, wait_seconds=4)),
    ("queue_log-exitwithtimeout.txt", 3, lambda t, c: ql.exit_with_timeout(at(t), c, Q, position=1,
                                                                           original_position=1, wait_seconds=6)),
    ("queue_log-blindtransfer.txt", 3, lambda t, c: ql.blind_transfer(at(t), c, Q, Q2, exten="s",
                                                                      context="cc-test-park", hold_seconds=1,
                                                                      talk_seconds=2, original_position=1)),
    ("queue_log-attendedtransfer.txt", 3, lambda t, c: ql.attended_transfer(
        at(t), c, Q, Q2, method="BRIDGE", method_data=("aecc7964-ca1b-410b-842c-2f81b877430a",), hold_seconds=1,
        talk_seconds=6, original_position=1)),
    # queues.conf log_membername_as_agent = yes, log-caller-id-name = yes: app_queue writes "Wang|Wu" as "Wang_Wu"
    ("queue_log-membername-as-agent.txt", 0, lambda t, c: ql.add_member(at(t), Q, Q2)),
    ("queue_log-membername-as-agent.txt", 1, lambda t, c: ql.enter_queue(
        at(t), c, Q, caller_number="13900139000", position=1, caller_name="Wang|Wu")),
    ("queue_log-membername-as-agent.txt", 6, lambda t, c: ql.remove_member(at(t), Q, Q2)),
    ("queue_log-logger.txt", 0, lambda t, c: ql.config_reload(at(t))),
]


@pytest.mark.parametrize(("name", "index", "build"), TABLE, ids=[f"{n}:{i}" for n, i, _ in TABLE])
def test_each_constructor_writes_app_queues_line(name: str, index: int, build: Build) -> None:
    line = fixture_lines(name)[index]
    epoch, callid = line.split("|")[:2]
    assert ql.format_line(build(int(epoch), callid)) == line


def test_queue_start_is_the_line_asterisk_wrote_at_boot() -> None:
    note = next(ln.data.decode() for ln in read_capture("queue_log-logger-ami.txt")
                if ln.tag == "--" and ln.data.startswith(b"first line of queue_log"))
    line = ast.literal_eval(note.split(": ", 1)[1])
    assert ql.format_line(ql.queue_start(at(int(line.split("|")[0])))) == line
    assert ql.parse_line(line).event is E.QUEUESTART


def test_epoch_and_durations_are_whole_epoch_seconds_like_time_null() -> None:
    start = datetime(2026, 12, 6, 7, 0, 0, 900_000, tzinfo=timezone.utc)
    end = start + timedelta(milliseconds=300)  # 0.3 s later, but the epoch second changed
    assert ql.epoch_of(end) == ql.epoch_of(start) + 1
    assert ql.elapsed_seconds(start, end) == 1
    assert ql.elapsed_seconds(end, start) == 0
    assert ql.epoch_of(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=timezone.utc)) == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        ql.epoch_of(datetime(2026, 12, 6))


def test_outside_text_cannot_break_the_line() -> None:
    t = at(1796543664)
    e = ql.enter_queue(t, "1796543663.89", Q, caller_number="138\r\n00", position=1, url="http://x/?a=1|b",
                       caller_name="Wang\nWu|Jr")
    assert ql.format_line(e) == "1796543664|1796543663.89|hotline-fallback|NONE|ENTERQUEUE|http://x/?a=1_b|138__00|1|Wang_Wu_Jr\n"
    p = ql.pause(t, Q, "Agent|Q1\n", reason="lunch|1\r\n")
    assert ql.format_line(p) == "1796543664|NONE|hotline-fallback|Agent_Q1_|PAUSE|lunch_1__\n"
    assert ql.format_line(p).count("\n") == 1


@pytest.mark.parametrize("bad", [
    lambda: ql.abandon(at(1), "1.1", Q, position=0, original_position=1, wait_seconds=1),
    lambda: ql.abandon(at(1), "1.1", Q, position=1, original_position=1, wait_seconds=-1),
    lambda: ql.abandon(at(1), "1.1", Q, position=True, original_position=1, wait_seconds=1),
    lambda: ql.ring_no_answer(at(1), "1.1", Q, Q1, ring_ms=1.5),
    lambda: ql.abandon(at(1), "not-a-uniqueid", Q, position=1, original_position=1, wait_seconds=1),
    lambda: ql.abandon(at(1), "1.1|x", Q, position=1, original_position=1, wait_seconds=1),
    lambda: ql.abandon(at(1), "1.1", "hot|line", position=1, original_position=1, wait_seconds=1),
    lambda: ql.abandon(at(1), "1.1", "hot\nline", position=1, original_position=1, wait_seconds=1),
    lambda: ql.abandon(at(1), "1.1", " hotline", position=1, original_position=1, wait_seconds=1),
    lambda: ql.pause(at(1), "", Q1),
    lambda: ql.pause(at(1), Q, "  "),
    lambda: ql.exit_with_key(at(1), "1.1", Q, key="55", position=1, original_position=1, wait_seconds=1),
    lambda: ql.exit_with_key(at(1), "1.1", Q, key="x", position=1, original_position=1, wait_seconds=1),
    lambda: ql.attended_transfer(at(1), "1.1", Q, Q1, method="SWAP", method_data=(), hold_seconds=1,
                                 talk_seconds=1, original_position=1),
    lambda: ql.connect(at(1), "1.1", Q, Q1, hold_seconds=1, member_uniqueid="Local/x;1", ring_seconds=1),
    lambda: ql.QueueLogEntry(-1, "NONE", Q, Q1, E.PAUSE, ("",)),
    lambda: ql.QueueLogEntry(1, "NONE", Q, Q1, "PAUSE", ("",)),  # type: ignore[arg-type]
    lambda: ql.QueueLogEntry(1, "NONE", Q, Q1, E.PAUSE, ("a|b",)),
])
def test_bad_values_are_refused_with_a_clear_error(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("line", [
    "",
    "1796543554|NONE|hotline-fallback|Agent Q1|PAUSE",  # no data separator
    "x|NONE|hotline-fallback|Agent Q1|PAUSE|lunch",
    "1796543554|NONE|hotline-fallback|Agent Q1|AGENTLOGIN|x",  # an event we do not write
    "1796543554|NONE|hotline-fallback|Agent Q1|pause|lunch",
])
def test_parse_line_refuses_what_is_not_a_queue_log_line(line: str) -> None:
    with pytest.raises(ValueError):
        ql.parse_line(line)


def test_realtime_columns_follow_logger_c() -> None:
    # data1..data5; from the sixth field on, the rest stays in data5 (ast_app_separate_args' last argument)
    link = ql.attended_transfer(at(1), "1.1", Q, Q2, method="LINK", method_data=("Local/a;1", "Local/b;1"),
                                hold_seconds=3, talk_seconds=7, original_position=2)
    assert link.data_columns() == ("LINK", "Local/a;1", "Local/b;1", "3", "7|2")
    assert link.data_text() == "LINK|Local/a;1|Local/b;1|3|7|2"
    add = ql.add_member(at(1), Q, Q2, paused=True)
    assert add.data_columns() == ("PAUSED", "", "", "", "")
    assert ql.format_line(add) == "1|MANAGER|hotline-fallback|Agent Q2|ADDMEMBER|PAUSED\n"
