"""Scripted callers and agents for the simulated PBX.

A :class:`CallerScript` says what a caller does when Asterisk reads them (GET DATA, WAIT FOR DIGIT,
STREAM FILE with escape digits, RECORD FILE): each item of ``inputs`` is consumed by the next such
command. An :class:`AgentScript` says how an agent's phone behaves when Dial rings it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Union


@dataclass(frozen=True, slots=True)
class Silence:
    """The caller presses nothing: the reading command times out."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hangs up while this command runs (half-way through it)."""


@dataclass(frozen=True, slots=True)
class Record:
    """The caller speaks for ``seconds`` then presses ``end_with`` (or lets the recording time out)."""

    seconds: float
    end_with: str | None = "#"


CallerInput = Union[str, Silence, Hangup, Record]
ChannelTech = Literal["SIP", "PJSIP", "Local"]


@dataclass(slots=True)
class CallerScript:
    """One simulated caller.

    ``hangup_after``: seconds (simulated, divided by ``speed``) after which the caller hangs up
    whatever is happening. ``hangup_between_command_and_reply``: on the Nth AGI command (1-based)
    the caller hangs up after the command was read and before its reply is written, so the FastAGI
    server sees ``HANGUP`` before the reply (as agi-sip-call.txt shows).
    ``silences_before_giving_up``: with no inputs left, the caller stays silent this many reads and
    hangs up during the next one.
    """

    caller_id: str
    caller_name: str = ""
    script: str = "hotline"
    channel_tech: ChannelTech = "SIP"
    inputs: list[CallerInput] = field(default_factory=list)
    hangup_after: float | None = None
    hangup_between_command_and_reply: int | None = None
    silences_before_giving_up: int = 3
    endpoint: str = "owner-phone"
    agi_args: tuple[str, ...] = ()
    language: str = "en"
    # Seconds a caller who reached the fallback queue waits before abandoning (simulated time).
    queue_patience: float = 5.0

    def __post_init__(self) -> None:
        if self.channel_tech not in ("SIP", "PJSIP", "Local"):
            raise ValueError(f"channel_tech must be SIP, PJSIP or Local, not {self.channel_tech!r}")
        for item in self.inputs:
            if isinstance(item, str) and not all(c in "0123456789*#ABCD" for c in item):
                raise ValueError(f"caller input {item!r} is not a DTMF digit string")


@dataclass(slots=True)
class AgentScript:
    """An agent's phone: rings ``answer_after`` seconds then answers (None: never), talks
    ``talk_seconds`` then hangs up; ``busy`` rejects every call with BUSY. ``rings=False``: the phone
    never signals ringing (a SIP peer whose host does not answer INVITEs: DialBegin, no DialState,
    DialEnd NOANSWER at the timeout, as ami-dial-unreachable.txt shows for ``SIP/deadpeer``)."""

    interface: str
    answer_after: float | None = 2.0
    talk_seconds: float = 5.0
    busy: bool = False
    rings: bool = True
    congested: bool = False  # the phone answers with Congestion(): DIALSTATUS CONGESTION


class CallEnd(enum.Enum):
    """How a simulated call ended, from the PBX's point of view."""

    CALLER_HUNG_UP = "caller_hung_up"
    SCRIPT_ENDED = "script_ended"  # the FastAGI server closed the session with the caller still there
    AGI_FAILED = "agi_failed"  # could not connect to the FastAGI server
    FALLBACK_ABANDONED = "fallback_abandoned"  # waited in the fallback queue and hung up
    ERROR = "error"


@dataclass(slots=True)
class CallResult:
    """What happened on one simulated call, for assertions and the runner's summary."""

    uniqueid: str
    channel: str
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    ended: CallEnd = CallEnd.ERROR
    cc_result: str | None = None
    fallback_queue: bool = False
    agi_status: str | None = None
    duration: float = 0.0
    error: str | None = None
