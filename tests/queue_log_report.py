"""A queue_log consumer as the reporting tools built on app_queue read it, for the tests.

Nothing here knows our server: it reads lines with :func:`callcentre.domain.queue_log.parse_line` and
counts what such tools count (per agent: calls answered = CONNECT, rings not answered = RINGNOANSWER;
per queue: callers who entered, abandoned, left with a key, timed out, left an empty queue, completed),
and checks the file the way a tailing reader needs it: whole lines, each call opened by ENTERQUEUE and
closed by exactly one final event.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from callcentre.domain.queue_log import QueueLogEntry, QueueLogEvent, parse_line

E = QueueLogEvent
FINAL = frozenset({E.COMPLETECALLER, E.COMPLETEAGENT, E.ABANDON, E.EXITWITHKEY, E.EXITWITHTIMEOUT, E.EXITEMPTY,
                   E.BLINDTRANSFER, E.ATTENDEDTRANSFER})
CALL_EVENTS = FINAL | {E.ENTERQUEUE, E.CONNECT, E.RINGNOANSWER, E.RINGCANCELED}
UNIQUEID = re.compile(r"^\d+\.\d+$")


def kind(value: str) -> str:
    """What a field holds: NONE / MANAGER, a channel uniqueid, a whole number, text, or nothing."""
    if value in ("NONE", "MANAGER"):
        return value
    if UNIQUEID.match(value):
        return "uid"
    if value.isdigit():
        return "int"
    return "text" if value else ""


# Each event's data as app_queue writes it (tests/fixtures/README-captures.md): "int" a number, "uid" a
# channel uniqueid, "num" the caller's number (digits or empty), "text?" free text or empty, "" empty.
LAYOUT: dict[QueueLogEvent, tuple[str, ...]] = {
    E.ENTERQUEUE: ("text?", "num", "int"),
    E.RINGNOANSWER: ("int",), E.RINGCANCELED: ("int",),
    E.CONNECT: ("int", "uid", "int"),
    E.COMPLETECALLER: ("int", "int", "int"), E.COMPLETEAGENT: ("int", "int", "int"),
    E.ABANDON: ("int", "int", "int"), E.EXITWITHTIMEOUT: ("int", "int", "int"), E.EXITEMPTY: ("int", "int", "int"),
    E.EXITWITHKEY: ("int", "int", "int", "int"),
    E.PAUSE: ("text?",), E.UNPAUSE: ("text?",),
    E.ADDMEMBER: ("text?",), E.REMOVEMEMBER: ("",), E.QUEUESTART: ("",),
}
_CALLID = {E.PAUSE: "NONE", E.UNPAUSE: "NONE", E.ADDMEMBER: "MANAGER", E.REMOVEMEMBER: "MANAGER",
           E.QUEUESTART: "NONE"}
_NO_AGENT = {E.ENTERQUEUE, E.ABANDON, E.EXITWITHKEY, E.EXITWITHTIMEOUT, E.EXITEMPTY, E.QUEUESTART}


def check_layout(e: QueueLogEntry) -> None:
    """The line has app_queue's layout for its event: callid, agent and every data field of the right kind."""
    want = LAYOUT[e.event]
    got = tuple(kind(v) for v in e.data)
    assert len(got) == len(want), (e, want)
    for w, g in zip(want, got, strict=True):
        assert g == w or (w == "text?" and g in ("text", "int", "")) or (w == "num" and g in ("int", "")), (e, want)
    assert kind(e.callid) == _CALLID.get(e.event, "uid"), e
    assert (e.agent == "NONE") is (e.event in _NO_AGENT), e
    assert e.queue != "NONE" or e.event is E.QUEUESTART, e


@dataclass
class QueueReport:
    queue: str
    answered: Counter[str] = field(default_factory=Counter)  # agent -> CONNECT lines
    not_answered: Counter[str] = field(default_factory=Counter)  # agent -> RINGNOANSWER lines
    totals: Counter[str] = field(default_factory=Counter)  # event name -> lines of this queue
    calls: dict[str, list[QueueLogEntry]] = field(default_factory=dict)  # callid -> its lines, in order

    @property
    def abandoned(self) -> int:
        return self.totals[E.ABANDON.value]


def read_entries(data: bytes | str | Path) -> list[QueueLogEntry]:
    """Every line of a queue_log file; AssertionError on a line that is not whole or not app_queue's."""
    raw = data.read_bytes() if isinstance(data, Path) else data.encode() if isinstance(data, str) else data
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\n"), f"the file does not end with a whole line: {text[-80:]!r}"
    return [parse_line(line) for line in text.split("\n")[:-1]]


def report(entries: list[QueueLogEntry], queue: str) -> QueueReport:
    """The counts a queue report shows for ``queue``."""
    rep = QueueReport(queue)
    for e in entries:
        if e.queue != queue:
            continue
        rep.totals[e.event.value] += 1
        if e.event is E.CONNECT:
            rep.answered[e.agent] += 1
        elif e.event is E.RINGNOANSWER:
            rep.not_answered[e.agent] += 1
        if e.event in CALL_EVENTS:
            rep.calls.setdefault(e.callid, []).append(e)
    return rep


def check_calls_are_closed(rep: QueueReport) -> None:
    """Each call: ENTERQUEUE first, exactly one final event, and it is the last of the call's lines."""
    for callid, lines in rep.calls.items():
        events = [e.event for e in lines]
        assert events[0] is E.ENTERQUEUE, (callid, events)
        finals = [ev for ev in events if ev in FINAL]
        assert len(finals) == 1 and events[-1] in FINAL, (callid, events)
