"""Agent call recordings, the pure part: the file's name, what MixMonitor is told, whether a file is a
finished WAV of the talk, and the port the wait script records through.

Seen on Asterisk 20.20.1 (docs/research-recording-transfers.md, section 1): MixMonitor started from the
caller's FastAGI session just before the offer's ``EXEC Dial`` with option ``b`` records exactly the
bridged talk (not the ringing, not Dial's ``A()`` announcement). It creates the file (and missing
directories) at once with a 44-byte header whose RIFF size is 0, buffers, and writes the real header only
when it closes the file: at ``StopMixMonitor``, or when the channel is destroyed (for us, when the FastAGI
session ends after a hang-up). ``MixMonitorStart`` comes even when the file cannot be opened, and a full
disk leaves a truncated file without a word on AMI. So the events are not trusted: the file is read
after the call, and :func:`judge` decides what it is.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from callcentre.domain.acd import Offer
    from callcentre.domain.calls import CallInfo
    from callcentre.domain.ports import Channel
    from callcentre.domain.waiting import Waiter


class RecordingStatus(str, enum.Enum):
    COMPLETE = "complete"  # a finished WAV about as long as the talk
    SHORT = "short"  # shorter than the talk (disk full), or never finished (not playable everywhere)
    MISSING = "missing"  # no file, no audio, or not started (directory full or not writable)
    DELETED = "deleted"  # removed by retention (or by hand); the row stays


ASTERISK_UNIQUEID = re.compile(r"^[0-9]{1,20}\.[0-9]{1,10}\Z")
"""An Asterisk channel uniqueid: epoch seconds, a dot, a sequence number."""

MIXMONITOR_ID = re.compile(r"^0x[0-9a-fA-F]{1,16}\Z")
"""What MixMonitor's ``i(VAR)`` puts in VAR (a pointer); anything else is not passed to StopMixMonitor."""

MIXMONITOR_ID_VARIABLE = "CC_MIXMON"

_OFFER_SEQUENCE = re.compile(r"^[0-9]{1,6}\Z")
_NAME = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{1,20}\.[0-9]{1,10}-[0-9]{1,6}(-caller|-agent)?\.wav\Z")
BYTES_PER_SECOND = 16000  # 8 kHz 16-bit mono, what MixMonitor's .wav writes (used when a header says nothing)


class UnusableName(ValueError):
    """The uniqueid or offer id cannot become a file name (not what Asterisk and our distribution make)."""


def recording_name(uniqueid: str, offer_id: str, day: date) -> str:
    """The file of one answered offer, relative to the recording root: ``YYYY/MM/DD/<uniqueid>-<n>.wav``.

    Made only from the call's Asterisk uniqueid and the offer's sequence number (``<uniqueid>#<n>``), both
    checked here: nothing a caller or a browser sends is part of it.

    >>> recording_name("1796543479.5", "1796543479.5#2", date(2026, 11, 24))
    '2026/11/24/1796543479.5-2.wav'
    """
    if not ASTERISK_UNIQUEID.match(uniqueid):
        raise UnusableName(f"uniqueid {uniqueid!r} is not an Asterisk uniqueid")
    call_id, sep, seq = offer_id.rpartition("#")
    if not sep or call_id != uniqueid or not _OFFER_SEQUENCE.match(seq):
        raise UnusableName(f"offer id {offer_id!r} is not <uniqueid>#<n> of this call")
    return f"{day:%Y/%m/%d}/{uniqueid}-{int(seq)}.wav"


def is_recording_name(name: str) -> bool:
    """A relative name :func:`recording_name` (or :func:`leg_names`) could have made; nothing else is opened."""
    return bool(_NAME.match(name))


def leg_names(name: str) -> tuple[str, str]:
    """The two directions apart (``separate_legs``): what the caller said, what the caller heard (the agent)."""
    stem = name.removesuffix(".wav")
    return f"{stem}-caller.wav", f"{stem}-agent.wav"


def mixmonitor_arguments(asterisk_directory: str, name: str, *, separate_legs: bool) -> tuple[str, str]:
    """``EXEC MixMonitor <file>,<options>``: the file as Asterisk sees it and the options.

    ``b`` records only while bridged; ``i(CC_MIXMON)`` keeps the MixMonitor's id for StopMixMonitor;
    ``r()``/``t()`` write the caller's and the agent's side apart. The third argument of MixMonitor (a
    shell command run at the end) is never used."""
    if not is_recording_name(name):
        raise UnusableName(f"{name!r} is not a recording name")
    root = asterisk_directory.rstrip("/")
    options = f"bi({MIXMONITOR_ID_VARIABLE})"
    if separate_legs:
        caller, agent = leg_names(name)
        options += f"r({root}/{caller})t({root}/{agent})"
    return f"{root}/{name}", options


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What a WAV file's header says, against the file's real size."""

    size: int  # bytes on disk
    riff_size: int  # the RIFF chunk size the header claims (0 until MixMonitor closes the file)
    finished: bool  # the header was written at close: RIFF size and data size match the file
    sample_rate: int
    channels: int
    bits: int
    byte_rate: int
    data_offset: int
    data_bytes: int  # audio bytes actually in the file

    @property
    def seconds(self) -> float:
        rate = self.byte_rate or BYTES_PER_SECOND
        return self.data_bytes / rate


def parse_wav(head: bytes, size: int) -> WavInfo | None:
    """The header of a RIFF/WAVE file (its first bytes, 512 are plenty) and the file's size; None when it
    is not a WAV file at all.

    >>> h = wav_header(16000)
    >>> info = parse_wav(h, 44 + 16000)
    >>> info.finished, info.data_bytes, info.seconds
    (True, 16000, 1.0)
    >>> parse_wav(wav_header(0, riff_size=0), 32812).finished   # still being written
    False
    >>> parse_wav(b"not a wav", 9) is None
    True
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    riff_size = struct.unpack_from("<I", head, 4)[0]
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    data_offset = data_size = None
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt " and body + 16 <= len(head):
            _format, channels, rate, byte_rate = struct.unpack_from("<HHII", head, body)
            bits = struct.unpack_from("<H", head, body + 14)[0]
            fmt = (channels, rate, byte_rate, bits)
        elif chunk == b"data":
            data_offset, data_size = body, length
            break
        pos = body + length + (length & 1)
    if fmt is None or data_offset is None or data_size is None:
        return None
    channels, rate, byte_rate, bits = fmt
    in_file = max(0, size - data_offset)
    finished = riff_size == size - 8 and data_size == in_file
    return WavInfo(size=size, riff_size=riff_size, finished=finished, sample_rate=rate, channels=channels, bits=bits,
                   byte_rate=byte_rate, data_offset=data_offset, data_bytes=in_file)


def wav_header(data_bytes: int, *, rate: int = 8000, riff_size: int | None = None) -> bytes:
    """A 44-byte PCM 16-bit mono header (as Asterisk's format_wav writes it); for tests and the simulator."""
    riff = 36 + data_bytes if riff_size is None else riff_size
    data = data_bytes if riff_size is None else riff_size
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


@dataclass(frozen=True, slots=True)
class Verdict:
    status: RecordingStatus
    reason: str | None
    seconds: float | None
    bytes: int | None


def judge(info: WavInfo | None, *, exists: bool, size: int, talk_seconds: float | None,
          unrecorded_seconds: float = 0.0, tolerance_seconds: float = 3.0) -> Verdict:
    """What the file of an answered call is, from the file alone and the talk time we measured.

    ``unrecorded_seconds``: the part of the talk MixMonitor's ``b`` leaves out (Dial's A() announcement,
    played after the answer and before the bridge).

    >>> judge(parse_wav(wav_header(160000), 160044), exists=True, size=160044, talk_seconds=10.2).status.value
    'complete'
    >>> v = judge(parse_wav(wav_header(32000), 32044), exists=True, size=32044, talk_seconds=10.0)
    >>> v.status.value, v.reason
    ('short', '2.0 s recorded of 10.0 s of talk')
    >>> judge(None, exists=False, size=0, talk_seconds=10.0).status.value
    'missing'
    """
    if not exists:
        return Verdict(RecordingStatus.MISSING, "no file", None, None)
    if info is None:
        return Verdict(RecordingStatus.MISSING, "not a WAV file" if size else "empty file", None, size)
    seconds = round(info.seconds, 2)
    if info.data_bytes == 0:
        return Verdict(RecordingStatus.MISSING, "no audio in the file", 0.0, size)
    if not info.finished:
        return Verdict(RecordingStatus.SHORT, "the WAV header was never finished (the file was not closed)", seconds, size)
    if talk_seconds is None:
        return Verdict(RecordingStatus.COMPLETE, "talk time unknown: the length was not checked", seconds, size)
    expected = max(0.0, talk_seconds - unrecorded_seconds)
    if seconds + tolerance_seconds < expected:
        return Verdict(RecordingStatus.SHORT, f"{seconds:.1f} s recorded of {expected:.1f} s of talk", seconds, size)
    return Verdict(RecordingStatus.COMPLETE, None, seconds, size)


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What became of one answered offer's recording, once its file was checked (a row of ``recordings``)."""

    call_uniqueid: str
    offer_id: str
    agent_id: str | None
    agent_login: str | None
    path: str  # relative to the recording root
    separate_legs: bool
    started_at: datetime
    ended_at: datetime | None
    talk_seconds: float | None
    seconds: float | None
    bytes: int | None
    status: RecordingStatus
    reason: str | None


@dataclass
class ActiveRecording:
    """One offer's recording from MixMonitor's start to the file's check."""

    offer_id: str
    agent_id: str
    name: str  # relative to the recording root ("" when no name could be made)
    started_mono: float
    started_at: datetime
    dial_options: str = ""  # added to the offer's Dial (A() announcement)
    mixmonitor_id: str | None = None  # None: not started (skipped, or MixMonitor refused)
    skipped: str | None = None  # why it was not started
    ended_mono: float | None = None

    @property
    def running(self) -> bool:
        return self.skipped is None


class CallRecorder(Protocol):
    """What the wait script (:mod:`callcentre.domain.waiting`) and call distribution record calls through;
    ``callcentre.distribution.recording.MixMonitorRecorder`` implements it. None of it may fail a call:
    a recording that cannot be made is a skipped recording, never a dropped caller."""

    async def announce(self, ch: Channel, call: CallInfo) -> None:
        """"This call may be recorded", to the caller before they reach an agent (raises CallerHungUp)."""

    async def start(self, waiter: Waiter, offer: Offer) -> ActiveRecording:
        """Just before the offer's Dial: start MixMonitor (or record why not)."""

    async def stop(self, rec: ActiveRecording, waiter: Waiter) -> None:
        """The Dial returned with the caller still there: StopMixMonitor, then check the file."""

    def abandon(self, rec: ActiveRecording, waiter: Waiter) -> None:
        """The Dial ended by a hang-up (or the session was cancelled): the file closes when the channel
        goes; check it then. Sends nothing to the channel."""


__all__ = [
    "ASTERISK_UNIQUEID", "BYTES_PER_SECOND", "MIXMONITOR_ID", "MIXMONITOR_ID_VARIABLE", "ActiveRecording", "CallRecorder",
    "RecordingResult", "RecordingStatus", "UnusableName", "Verdict", "WavInfo", "is_recording_name", "judge", "leg_names",
    "mixmonitor_arguments", "parse_wav", "recording_name", "wav_header",
]
