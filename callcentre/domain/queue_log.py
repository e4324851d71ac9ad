"""Asterisk-compatible ``queue_log`` events: what app_queue would write for our own call distribution.

Pure: typed events in, byte-exact lines out (and back), so the reporting tools call centres already run
on app_queue's log keep working when our distribution, not app_queue, handles the calls.

The line, as Asterisk's ``ast_queue_log`` (main/logger.c) writes it to ``astlogdir/queue_log``::

    epoch|callid|queuename|agent|EVENT|data1|data2|...\\n

``epoch`` is ``time(NULL)`` (whole seconds, when the line is written); ``callid`` the caller channel's
uniqueid, or ``NONE`` / ``MANAGER`` for events that belong to no call; ``agent`` is ``NONE`` for the
caller's own events. After ``EVENT`` comes ``|`` and the event's data joined with ``|``: an event without
data still ends in ``|`` (``...|ADDMEMBER|``). Every layout below was checked against the lines app_queue
wrote on the real Asterisk 20.20.1 (tests/fixtures/queue_log-*.txt, tests/fixtures/README-captures.md).

Durations in seconds are differences of whole epoch seconds (``time(NULL) - start``), not rounded
durations: use :func:`elapsed_seconds`. Ring times are milliseconds in RINGNOANSWER and RINGCANCELED but
whole seconds in CONNECT.

app_queue escapes nothing (a ``|`` or a line break in a value would shift or split the line); it replaces
``|`` by ``_`` only in the caller's name. Here text that comes from outside (caller name, URL, pause
reason, member name) gets that treatment for ``|``, CR and LF; identifiers we make ourselves (queue
name, uniqueid) are checked and refused with :class:`ValueError` when they could break the line.

Asterisk's realtime target (``extconfig.conf``: ``queue_log => <driver>,<database>,<table>``) stores the
same events as rows ``time, callid, queuename, agent, event, data1 .. data5`` (the schema of
contrib/ast-db-manage/queue_log: ``id`` bigint key, ``time`` datetime written as ``%F %T.%6q`` local time
or GMT with ``queue_log_realtime_use_gmt``, ``callid`` 80, ``queuename`` 256, ``agent`` 80, ``event`` 32,
``data1``-``data5`` 100 characters); :meth:`QueueLogEntry.data_columns` gives those five columns. A table
with one ``data`` column instead gets the joined data (what :meth:`QueueLogEntry.data_text` returns).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "NONE",
    "MANAGER",
    "QueueLogEvent",
    "QueueLogEntry",
    "QueueLogSink",
    "abandon",
    "add_member",
    "attended_transfer",
    "blind_transfer",
    "complete_agent",
    "complete_caller",
    "connect",
    "elapsed_seconds",
    "enter_queue",
    "epoch_of",
    "exit_empty",
    "exit_with_key",
    "exit_with_timeout",
    "format_line",
    "parse_line",
    "pause",
    "pause_all",
    "queue_start",
    "config_reload",
    "remove_member",
    "ring_canceled",
    "ring_no_answer",
    "unpause",
    "unpause_all",
]

NONE = "NONE"  # callid / queue / agent of an event that has none
MANAGER = "MANAGER"  # callid of member changes made over AMI (QueueAdd/QueueRemove)


class QueueLogEvent(str, enum.Enum):
    """The app_queue events we write, by the name app_queue writes."""

    ENTERQUEUE = "ENTERQUEUE"  # url|callerid|position[|callername]
    CONNECT = "CONNECT"  # holdtime s|member channel uniqueid|ringtime s
    RINGNOANSWER = "RINGNOANSWER"  # ringtime ms
    RINGCANCELED = "RINGCANCELED"  # ringtime ms (the caller left while the member rang)
    COMPLETECALLER = "COMPLETECALLER"  # holdtime s|calltime s|origposition
    COMPLETEAGENT = "COMPLETEAGENT"  # holdtime s|calltime s|origposition
    ABANDON = "ABANDON"  # position|origposition|waittime s
    EXITWITHKEY = "EXITWITHKEY"  # key|position|origposition|waittime s
    EXITWITHTIMEOUT = "EXITWITHTIMEOUT"  # position|origposition|waittime s
    EXITEMPTY = "EXITEMPTY"  # position|origposition|waittime s
    BLINDTRANSFER = "BLINDTRANSFER"  # exten|context|holdtime s|calltime s|origposition
    ATTENDEDTRANSFER = "ATTENDEDTRANSFER"  # method|method data...|holdtime s|calltime s|origposition
    PAUSE = "PAUSE"  # reason
    UNPAUSE = "UNPAUSE"  # reason
    PAUSEALL = "PAUSEALL"  # reason
    UNPAUSEALL = "UNPAUSEALL"  # reason
    ADDMEMBER = "ADDMEMBER"  # "PAUSED" or ""
    REMOVEMEMBER = "REMOVEMEMBER"  # ""
    QUEUESTART = "QUEUESTART"  # "" (the queue logger started: Asterisk's boot; our distribution's start)
    CONFIGRELOAD = "CONFIGRELOAD"  # "" (logger reload)


# What a token we make ourselves may hold: no field separator, no line break, no space at either end.
_TOKEN = re.compile(r"^[^|\r\n\s](?:[^|\r\n]*[^|\r\n\s])?$")
_UNIQUEID = re.compile(r"^\d{1,20}\.\d{1,12}$")
_KEYS = frozenset("0123456789*#")
_LINE = re.compile(r"^(\d{1,20})\|([^|]*)\|([^|]*)\|([^|]*)\|([A-Z]{1,32})\|(.*)$")


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    """One queue_log line. Build it with the constructors below, which know each event's fields."""

    epoch: int
    callid: str
    queue: str
    agent: str
    event: QueueLogEvent
    data: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise ValueError(f"queue_log epoch must be a whole number of seconds >= 0, not {self.epoch!r}")
        for name in ("callid", "queue", "agent"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _TOKEN.match(value):
                raise ValueError(f"queue_log {name} {value!r}: one token without '|', line breaks or outer spaces")
        if not isinstance(self.event, QueueLogEvent):
            raise ValueError(f"queue_log event {self.event!r} is not a QueueLogEvent")
        for value in self.data:
            if not isinstance(value, str) or any(c in value for c in "|\r\n"):
                raise ValueError(f"queue_log data {value!r}: no '|' or line breaks in a data field")

    def data_text(self) -> str:
        """The data as one string (``data`` column of a non-adaptive realtime table)."""
        return "|".join(self.data)

    def data_columns(self) -> tuple[str, str, str, str, str]:
        """``data1``..``data5`` of Asterisk's adaptive realtime ``queue_log`` table.

        Like logger.c, a sixth and later field stays in ``data5`` with the rest of the line (it splits
        the data at ``|`` into at most five arguments, the last one keeping the remainder).
        """
        parts = list(self.data[:4]) + (["|".join(self.data[4:])] if len(self.data) > 4 else [])
        parts += [""] * (5 - len(parts))
        return (parts[0], parts[1], parts[2], parts[3], parts[4])


class QueueLogSink(Protocol):
    """Where entries go (file, table). ``write`` must return at once and must never raise into call handling."""

    def write(self, entry: QueueLogEntry) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------------------------------
def format_line(entry: QueueLogEntry) -> str:
    """The line app_queue would write for ``entry``, with its ``\\n``."""
    return f"{entry.epoch}|{entry.callid}|{entry.queue}|{entry.agent}|{entry.event.value}|{entry.data_text()}\n"


def parse_line(line: str) -> QueueLogEntry:
    """A line of a queue_log file (with or without its ``\\n``) as an entry; ValueError if it is not one
    of the events in :class:`QueueLogEvent` or not in the layout above."""
    text = line[:-1] if line.endswith("\n") else line
    m = _LINE.match(text)
    if m is None:
        raise ValueError(f"not a queue_log line: {line!r}")
    try:
        event = QueueLogEvent(m[5])
    except ValueError:
        raise ValueError(f"queue_log event {m[5]!r} is not one we know") from None
    return QueueLogEntry(int(m[1]), m[2], m[3], m[4], event, tuple(m[6].split("|")))


# ---------------------------------------------------------------------------------------------------
# Helpers for the emitters
# ---------------------------------------------------------------------------------------------------
def epoch_of(at: datetime) -> int:
    """Whole epoch seconds of an aware time, as ``time(NULL)`` would read at that moment."""
    if at.tzinfo is None:
        raise ValueError("queue_log times must be timezone-aware")
    return math.floor(at.timestamp())


def elapsed_seconds(start: datetime, end: datetime) -> int:
    """app_queue's durations: ``time(NULL) - start`` in whole epoch seconds (never negative)."""
    return max(0, epoch_of(end) - epoch_of(start))


def _text(value: str) -> str:
    """Outside text in a data or agent field: app_queue's ``|`` -> ``_``, and line breaks too."""
    return value.replace("|", "_").replace("\r", "_").replace("\n", "_")


def _count(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"queue_log {name} must be a whole number >= 0, not {value!r}")
    return str(value)


def _position(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"queue_log {name} must be a queue position >= 1, not {value!r}")
    return str(value)


def _callid(uniqueid: str) -> str:
    if not isinstance(uniqueid, str) or not _UNIQUEID.match(uniqueid):
        raise ValueError(f"queue_log callid {uniqueid!r} must be an Asterisk uniqueid like 1700000000.42")
    return uniqueid


def _agent(agent: str) -> str:
    cleaned = _text(agent).strip()
    if not cleaned:
        raise ValueError("queue_log agent must not be empty")
    return cleaned


def _entry(at: datetime, callid: str, queue: str, agent: str, event: QueueLogEvent, *data: str) -> QueueLogEntry:
    return QueueLogEntry(epoch_of(at), callid, queue, agent, event, tuple(data))


# ---------------------------------------------------------------------------------------------------
# One constructor per event, with the fields app_queue writes
# ---------------------------------------------------------------------------------------------------
def enter_queue(
    at: datetime, uniqueid: str, queue: str, *, caller_number: str, position: int, url: str = "",
    caller_name: str | None = None,
) -> QueueLogEntry:
    """The caller joins: ``url|callerid|position``; with ``caller_name`` (queues.conf ``log-caller-id-name``)
    a fourth field. ``caller_number`` is ``""`` for a caller without a number."""
    data = [_text(url), _text(caller_number), _position("position", position)]
    if caller_name is not None:
        data.append(_text(caller_name))
    return _entry(at, _callid(uniqueid), queue, NONE, QueueLogEvent.ENTERQUEUE, *data)


def connect(
    at: datetime, uniqueid: str, queue: str, agent: str, *, hold_seconds: int, member_uniqueid: str | None,
    ring_seconds: int,
) -> QueueLogEntry:
    """The member answered: seconds waited (entering to answer), the member channel's uniqueid, seconds rung.

    ``member_uniqueid`` None: the member channel is not known (our distribution without AMI, which is
    where it learns it); the field is then empty, which app_queue itself never writes."""
    member = "" if member_uniqueid is None else _callid(member_uniqueid)
    return _entry(at, _callid(uniqueid), queue, _agent(agent), QueueLogEvent.CONNECT,
                  _count("hold_seconds", hold_seconds), member, _count("ring_seconds", ring_seconds))


def ring_no_answer(at: datetime, uniqueid: str, queue: str, agent: str, *, ring_ms: int) -> QueueLogEntry:
    """The member rang for ``ring_ms`` milliseconds without answering (ring timeout, busy, unreachable)."""
    return _entry(at, _callid(uniqueid), queue, _agent(agent), QueueLogEvent.RINGNOANSWER, _count("ring_ms", ring_ms))


def ring_canceled(at: datetime, uniqueid: str, queue: str, agent: str, *, ring_ms: int) -> QueueLogEntry:
    """The caller left (hung up, pressed an exit key) while the member rang for ``ring_ms`` milliseconds;
    app_queue writes it just before ABANDON / EXITWITHKEY."""
    return _entry(at, _callid(uniqueid), queue, _agent(agent), QueueLogEvent.RINGCANCELED, _count("ring_ms", ring_ms))


def _complete(event: QueueLogEvent, at: datetime, uniqueid: str, queue: str, agent: str, hold_seconds: int,
              talk_seconds: int, original_position: int) -> QueueLogEntry:
    return _entry(at, _callid(uniqueid), queue, _agent(agent), event, _count("hold_seconds", hold_seconds),
                  _count("talk_seconds", talk_seconds), _position("original_position", original_position))


def complete_caller(at: datetime, uniqueid: str, queue: str, agent: str, *, hold_seconds: int, talk_seconds: int,
                    original_position: int) -> QueueLogEntry:
    """The answered call ended and the caller hung up first."""
    return _complete(QueueLogEvent.COMPLETECALLER, at, uniqueid, queue, agent, hold_seconds, talk_seconds,
                     original_position)


def complete_agent(at: datetime, uniqueid: str, queue: str, agent: str, *, hold_seconds: int, talk_seconds: int,
                   original_position: int) -> QueueLogEntry:
    """The answered call ended and the member hung up first."""
    return _complete(QueueLogEvent.COMPLETEAGENT, at, uniqueid, queue, agent, hold_seconds, talk_seconds,
                     original_position)


def _left(event: QueueLogEvent, at: datetime, uniqueid: str, queue: str, position: int, original_position: int,
          wait_seconds: int, *first: str) -> QueueLogEntry:
    return _entry(at, _callid(uniqueid), queue, NONE, event, *first, _position("position", position),
                  _position("original_position", original_position), _count("wait_seconds", wait_seconds))


def abandon(at: datetime, uniqueid: str, queue: str, *, position: int, original_position: int,
            wait_seconds: int) -> QueueLogEntry:
    """The caller hung up while waiting (position now, position on entering, seconds waited)."""
    return _left(QueueLogEvent.ABANDON, at, uniqueid, queue, position, original_position, wait_seconds)


def exit_with_key(at: datetime, uniqueid: str, queue: str, *, key: str, position: int, original_position: int,
                  wait_seconds: int) -> QueueLogEntry:
    """The caller left with a key (our call-back key)."""
    if key not in _KEYS:
        raise ValueError(f"queue_log key {key!r} must be one of 0-9 * #")
    return _left(QueueLogEvent.EXITWITHKEY, at, uniqueid, queue, position, original_position, wait_seconds, key)


def exit_with_timeout(at: datetime, uniqueid: str, queue: str, *, position: int, original_position: int,
                      wait_seconds: int) -> QueueLogEntry:
    """The maximum wait ended the wait (the caller goes on to voicemail)."""
    return _left(QueueLogEvent.EXITWITHTIMEOUT, at, uniqueid, queue, position, original_position, wait_seconds)


def exit_empty(at: datetime, uniqueid: str, queue: str, *, position: int, original_position: int,
               wait_seconds: int) -> QueueLogEntry:
    """Nobody could take the call any more (leavewhenempty; for us: nobody staffed). Layout from
    app_queue's source, not seen in a capture."""
    return _left(QueueLogEvent.EXITEMPTY, at, uniqueid, queue, position, original_position, wait_seconds)


def blind_transfer(at: datetime, uniqueid: str, queue: str, agent: str, *, exten: str, context: str,
                   hold_seconds: int, talk_seconds: int, original_position: int) -> QueueLogEntry:
    """The member blind-transferred the caller to ``exten@context``; no COMPLETE* follows."""
    return _entry(at, _callid(uniqueid), queue, _agent(agent), QueueLogEvent.BLINDTRANSFER, _text(exten),
                  _text(context), _count("hold_seconds", hold_seconds), _count("talk_seconds", talk_seconds),
                  _position("original_position", original_position))


def attended_transfer(at: datetime, uniqueid: str, queue: str, agent: str, *, method: str, method_data: tuple[str, ...],
                      hold_seconds: int, talk_seconds: int, original_position: int) -> QueueLogEntry:
    """The member completed an attended transfer. ``method``: ``BRIDGE`` (data: the caller's bridge uniqueid),
    ``APP`` (the application) or ``LINK`` (two channels); no COMPLETE* follows."""
    if method not in ("BRIDGE", "APP", "LINK"):
        raise ValueError(f"queue_log attended transfer method {method!r} must be BRIDGE, APP or LINK")
    return _entry(at, _callid(uniqueid), queue, _agent(agent), QueueLogEvent.ATTENDEDTRANSFER, method,
                  *(_text(d) for d in method_data), _count("hold_seconds", hold_seconds),
                  _count("talk_seconds", talk_seconds), _position("original_position", original_position))


def pause(at: datetime, queue: str, agent: str, *, reason: str = "") -> QueueLogEntry:
    """The member paused in ``queue`` (callid ``NONE``; reason empty when none was given)."""
    return _entry(at, NONE, queue, _agent(agent), QueueLogEvent.PAUSE, _text(reason))


def unpause(at: datetime, queue: str, agent: str, *, reason: str = "") -> QueueLogEntry:
    return _entry(at, NONE, queue, _agent(agent), QueueLogEvent.UNPAUSE, _text(reason))


def pause_all(at: datetime, agent: str, *, reason: str = "") -> QueueLogEntry:
    """Paused in every queue at once (queue ``NONE``); app_queue follows it with one PAUSE per queue."""
    return _entry(at, NONE, NONE, _agent(agent), QueueLogEvent.PAUSEALL, _text(reason))


def unpause_all(at: datetime, agent: str, *, reason: str = "") -> QueueLogEntry:
    return _entry(at, NONE, NONE, _agent(agent), QueueLogEvent.UNPAUSEALL, _text(reason))


def add_member(at: datetime, queue: str, agent: str, *, paused: bool = False, source: str = MANAGER) -> QueueLogEntry:
    """The member joined the queue (our agent login). ``source`` is the callid column: app_queue writes
    ``MANAGER`` for AMI QueueAdd, the channel's uniqueid for AddQueueMember() in the dialplan."""
    return _entry(at, source, queue, _agent(agent), QueueLogEvent.ADDMEMBER, "PAUSED" if paused else "")


def remove_member(at: datetime, queue: str, agent: str, *, source: str = MANAGER) -> QueueLogEntry:
    """The member left the queue (our agent logout)."""
    return _entry(at, source, queue, _agent(agent), QueueLogEvent.REMOVEMEMBER, "")


def queue_start(at: datetime) -> QueueLogEntry:
    """The queue logger started (app_queue: at Asterisk's start). Written when our distribution starts, it
    tells reporting tools that calls still open in the log before it ended unseen."""
    return _entry(at, NONE, NONE, NONE, QueueLogEvent.QUEUESTART, "")


def config_reload(at: datetime) -> QueueLogEntry:
    """The configuration was reloaded (Asterisk: ``logger reload``)."""
    return _entry(at, NONE, NONE, NONE, QueueLogEvent.CONFIGRELOAD, "")
