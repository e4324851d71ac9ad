"""Agent call recording without a PBX: the pure part (names, MixMonitor's arguments, WAV headers, the verdict),
the recorder over a fake channel that writes files as MixMonitor does (seen on Asterisk 20.20.1: a 44-byte
header with RIFF size 0 at once, the real header at StopMixMonitor or when the channel goes), the wait
script's and call distribution's use of it, and the configuration. The real PBX: tests/pbx/test_pbx_recording.py.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import wave
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from callcentre.config import Config
from callcentre.config.schema import RecordingConfig
from callcentre.distribution import recording as recording_module
from callcentre.distribution.recording import MixMonitorRecorder
from callcentre.domain import recordings
from callcentre.domain.acd import MakeOffer, Offer
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.errors import Forbidden
from callcentre.domain.ports import CallerHungUp, FakeClock
from callcentre.domain.recordings import (
    ActiveRecording,
    RecordingResult,
    RecordingStatus,
    UnusableName,
    is_recording_name,
    judge,
    mixmonitor_arguments,
    parse_wav,
    recording_name,
    wav_header,
)
from callcentre.domain.users import AgentAction, UserRole, UserView, check_recordings, check_state_change, home_page
from callcentre.domain.waiting import Waiter, WaitScript
from fakes import FakeChannel, FakeTicketStore

REPO = Path(__file__).resolve().parent.parent
UID = "1795351990.1"
MID = "0x7f3b14008430"
DAY = "2026/11/24"  # FakeClock's day in Asia/Shanghai


def test_doctests() -> None:
    assert doctest.testmod(recordings).failed == 0


# ------------------------------------------------------------------------------ names and arguments

@pytest.mark.parametrize("uniqueid, offer_id, name", [
    (UID, f"{UID}#1", f"2026/11/24/{UID}-1.wav"),
    ("1796543479.15", "1796543479.15#12", "2026/11/24/1796543479.15-12.wav"),
    (UID, f"{UID}#007", f"2026/11/24/{UID}-7.wav"),
])
def test_recording_name_is_made_from_the_uniqueid_and_the_offer_only(uniqueid, offer_id, name) -> None:
    assert recording_name(uniqueid, offer_id, date(2026, 11, 24)) == name
    assert is_recording_name(name)


@pytest.mark.parametrize("uniqueid, offer_id", [
    ("../../etc/passwd", "../../etc/passwd#1"),
    ("1795351990.1/..", "1795351990.1/..#1"),
    ("1795351990.1;rm", "1795351990.1;rm#1"),
    ("SIP-abc", "SIP-abc#1"),
    (UID, "1795351990.2#1"),  # another call's offer
    (UID, f"{UID}#1,bW"),  # an option smuggled into MixMonitor's arguments
    (UID, f"{UID}#"),
    (UID, UID),
    ("1795351990.1\n", "1795351990.1\n#1"),
])
def test_a_name_that_is_not_ours_is_refused(uniqueid, offer_id) -> None:
    with pytest.raises(UnusableName):
        recording_name(uniqueid, offer_id, date(2026, 11, 24))


@pytest.mark.parametrize("name", ["../2026/11/24/1.1-1.wav", "2026/11/24/1.1-1.wav/../../x", "/etc/passwd",
                                  "2026/11/24/1.1-1.mp3", "2026/11/24/1.1-1.wav\n", "2026/1/24/1.1-1.wav", ""])
def test_only_names_we_make_are_recording_names(name) -> None:
    assert not is_recording_name(name)
    with pytest.raises(UnusableName):
        mixmonitor_arguments("/rec", name, separate_legs=False)


def test_mixmonitor_arguments() -> None:
    name = f"{DAY}/{UID}-1.wav"
    assert mixmonitor_arguments("/var/rec/", name, separate_legs=False) == (f"/var/rec/{name}", "bi(CC_MIXMON)")
    file, options = mixmonitor_arguments("/var/rec", name, separate_legs=True)
    stem = f"/var/rec/{DAY}/{UID}-1"
    assert options == f"bi(CC_MIXMON)r({stem}-caller.wav)t({stem}-agent.wav)"
    assert "," not in file + options and "|" not in file + options  # one EXEC argument each


# ------------------------------------------------------------------------------ WAV headers and the verdict

def _chunked(data_bytes: int, rate: int = 8000) -> bytes:
    """A header with a LIST chunk before data (other writers do that)."""
    fmt = b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") \
        + rate.to_bytes(4, "little") + (rate * 2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    lst = b"LIST" + (5).to_bytes(4, "little") + b"INFOx" + b"\x00"  # odd length, padded
    body = b"WAVE" + fmt + lst + b"data" + data_bytes.to_bytes(4, "little")
    return b"RIFF" + (len(body) + data_bytes).to_bytes(4, "little") + body


@pytest.mark.parametrize("head, size, finished, data, seconds", [
    (wav_header(16000), 44 + 16000, True, 16000, 1.0),
    (wav_header(0), 44, True, 0, 0.0),  # an unanswered offer's file after StopMixMonitor
    (wav_header(0, riff_size=0), 44, False, 0, 0.0),  # just opened by MixMonitor
    (wav_header(0, riff_size=0), 32812, False, 32768, 2.048),  # buffered, not closed (the capture's 32 KiB)
    (wav_header(32000), 44 + 16000, False, 16000, 1.0),  # a header claiming more than the file holds
    (wav_header(32000, rate=16000), 44 + 32000, True, 32000, 1.0),  # wav16
    (_chunked(8000), len(_chunked(8000)) + 8000, True, 8000, 0.5),
])
def test_parse_wav(head, size, finished, data, seconds) -> None:
    info = parse_wav(head, size)
    assert info is not None
    assert (info.finished, info.data_bytes, round(info.seconds, 3)) == (finished, data, seconds)


@pytest.mark.parametrize("head", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVX", b"ID3\x03" + b"\x00" * 60,
                                  b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_not_a_wav(head) -> None:
    assert parse_wav(head, len(head)) is None


def _info(seconds: float, finished: bool = True):
    n = int(seconds * 16000)
    return parse_wav(wav_header(n) if finished else wav_header(0, riff_size=0), 44 + n)


@pytest.mark.parametrize("kw, status, reason", [
    (dict(info=None, exists=False, size=0, talk_seconds=9.0), "missing", "no file"),
    (dict(info=None, exists=True, size=0, talk_seconds=9.0), "missing", "empty file"),
    (dict(info=None, exists=True, size=100, talk_seconds=9.0), "missing", "not a WAV file"),
    (dict(info=_info(0), exists=True, size=44, talk_seconds=9.0), "missing", "no audio in the file"),
    (dict(info=_info(9, finished=False), exists=True, size=44 + 144000, talk_seconds=9.0), "short",
     "the WAV header was never finished (the file was not closed)"),
    (dict(info=_info(4.1), exists=True, size=44 + 65600, talk_seconds=7.5, tolerance_seconds=1.0), "short",
     "4.1 s recorded of 7.5 s of talk"),
    (dict(info=_info(8.9), exists=True, size=44, talk_seconds=9.2), "complete", None),
    (dict(info=_info(9.0), exists=True, size=44, talk_seconds=None), "complete",
     "talk time unknown: the length was not checked"),
    # Dial's A() played 5.4 s of the talk before the bridge: not in the recording, not missing from it
    (dict(info=_info(4.0), exists=True, size=44, talk_seconds=9.5, unrecorded_seconds=5.4, tolerance_seconds=0.5),
     "complete", None),
    (dict(info=_info(4.0), exists=True, size=44, talk_seconds=9.5, unrecorded_seconds=0.0, tolerance_seconds=0.5),
     "short", "4.0 s recorded of 9.5 s of talk"),
])
def test_judge(kw, status, reason) -> None:
    verdict = judge(**kw)
    assert (verdict.status.value, verdict.reason) == (status, reason)


# ------------------------------------------------------------------------------ the recorder

@dataclass
class MixMonitorChannel(FakeChannel):
    """A caller's channel in a FastAGI session whose MixMonitor writes files as Asterisk's does."""

    talk_bytes: int = 16000 * 10
    mixmonitor_result: int = 0
    creates_file: bool = True  # False: Asterisk cannot open it (MixMonitorStart comes all the same)
    open_files: list[Path] = field(default_factory=list)

    async def exec(self, application, *args):
        await super().exec(application, *args)
        if application == "MixMonitor":
            if self.mixmonitor_result:
                return self.mixmonitor_result
            file, options = args
            paths = [Path(file)]
            for tag in ("r(", "t("):
                if tag in options:
                    paths.append(Path(options.split(tag, 1)[1].split(")", 1)[0]))
            if self.creates_file:
                for p in paths:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(wav_header(0, riff_size=0))
                    self.open_files.append(p)
            self.variables["CC_MIXMON"] = MID
        elif application == "StopMixMonitor":
            self.close_files()
        return 0

    def close_files(self) -> None:
        """MixMonitor closes: the audio and the real header (StopMixMonitor, or the channel destroyed)."""
        for p in self.open_files:
            p.write_bytes(wav_header(self.talk_bytes) + b"\x10\x00" * (self.talk_bytes // 2))
        self.open_files = []


@dataclass
class Results:
    recorded: list[RecordingResult] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)


class ResultsPort:
    def __init__(self) -> None:
        self.r = Results()

    async def recorded(self, result: RecordingResult) -> None:
        self.r.recorded.append(result)

    def skipped(self, uniqueid: str, kind: str, reason: str) -> None:
        self.r.skipped.append((uniqueid, kind, reason))


def config(root: Path, **recording) -> Config:
    data = {"enabled": True, "directory": str(root), "asterisk_directory": str(root), "min_free_mb": 0, **recording}
    return Config.model_validate({"recording": data, "prompts": {"local_dir": str(REPO / "prompts")}})


def recorder_for(root: Path, clock: FakeClock | None = None, **recording) -> tuple[MixMonitorRecorder, ResultsPort, FakeClock]:
    clock = clock or FakeClock()
    results = ResultsPort()
    rec = MixMonitorRecorder(config(root, **recording), clock, results, agent_login=lambda a: {"7": "a1"}.get(a))
    rec.poll_seconds = 0.002
    return rec, results, clock


def waiter_on(ch: FakeChannel, clock: FakeClock) -> Waiter:
    call = CallInfo(uniqueid=ch.uniqueid, channel=ch.channel_name, caller_id_raw=ch.caller_id, caller_id="+8613800138000",
                    caller_name="Zhang San", language="en")
    return Waiter(ch=ch, call=call, entered_mono=clock.monotonic())


def offer(n: int = 1, uid: str = UID) -> Offer:
    return Offer(f"{uid}#{n}", uid, "7", "PJSIP/agent1", 10.0, "Zhang San", uid)


async def ring(recorder: MixMonitorRecorder, clock: FakeClock, w: Waiter, o: Offer, *, answer_after: float | None,
               talk: float = 10.0) -> ActiveRecording:
    """What the wait script and call distribution do around one offer's Dial, with the caller staying."""
    w.dialling_offer = o
    rec = await recorder.start(w, o)
    if answer_after is not None:
        clock.advance(answer_after)
        w.answered_offer, w.answered_mono = o.offer_id, clock.monotonic()
        clock.advance(talk)
    else:
        clock.advance(10)
    await recorder.stop(rec, w)
    w.dialling_offer = None  # dial_returned
    return rec


async def test_an_answered_offer_is_recorded_stopped_and_checked(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(talk_bytes=16000 * 10)
    w = waiter_on(ch, clock)
    rec = await ring(recorder, clock, w, offer(), answer_after=1.0, talk=10.2)
    await recorder.drain()
    name = f"{DAY}/{UID}-1.wav"
    assert ("exec", "MixMonitor", f"{tmp_path}/{name}", "bi(CC_MIXMON)") in ch.ops
    assert ("exec", "StopMixMonitor", MID) in ch.ops  # this MixMonitor only, by its id
    assert rec.mixmonitor_id == MID and rec.dial_options == ""
    [r] = results.r.recorded
    assert (r.status, r.reason, r.path, r.seconds, r.talk_seconds) == (RecordingStatus.COMPLETE, None, name, 10.0, 10.2)
    assert (r.call_uniqueid, r.offer_id, r.agent_id, r.agent_login, r.bytes) == (UID, f"{UID}#1", "7", "a1", 160044)
    assert r.started_at == clock.now() - timedelta(seconds=10.2)  # the answer
    assert results.r.skipped == [] and recorder.checking == 0


async def test_after_a_hang_up_nothing_is_sent_and_the_file_is_checked_once_the_channel_is_gone(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(talk_bytes=16000 * 6)
    w = waiter_on(ch, clock)
    o = offer()
    w.dialling_offer = o
    rec = await recorder.start(w, o)
    clock.advance(1)
    w.answered_offer, w.answered_mono = o.offer_id, clock.monotonic()
    clock.advance(6)
    ch._hung_up = True
    recorder.abandon(rec, w)  # the Dial ended by the hang-up; the script is cancelled
    await asyncio.sleep(0.02)
    assert results.r.recorded == []  # the file is still open: no verdict on a buffered prefix
    w.dialling_offer = None  # left()
    ch.close_files()  # the FastAGI session ended, the channel was destroyed: MixMonitor closed the file
    await recorder.drain()
    assert not any(op[:2] == ("exec", "StopMixMonitor") for op in ch.ops)
    [r] = results.r.recorded
    assert (r.status, r.seconds, r.talk_seconds) == (RecordingStatus.COMPLETE, 6.0, 6.0)


async def test_an_unanswered_offer_leaves_neither_a_row_nor_a_file(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(talk_bytes=0)  # b: nothing bridged, nothing written
    w = waiter_on(ch, clock)
    await ring(recorder, clock, w, offer(), answer_after=None)
    await recorder.drain()
    assert results.r.recorded == [] and ("exec", "StopMixMonitor", MID) in ch.ops
    assert not (tmp_path / DAY / f"{UID}-1.wav").exists()


async def test_the_next_offer_gets_its_own_file(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(talk_bytes=0)
    w = waiter_on(ch, clock)
    await ring(recorder, clock, w, offer(1), answer_after=None)
    ch.talk_bytes = 16000 * 5
    await ring(recorder, clock, w, offer(2), answer_after=0.5, talk=5.0)
    await recorder.drain()
    [r] = results.r.recorded
    assert r.path == f"{DAY}/{UID}-2.wav" and r.status is RecordingStatus.COMPLETE
    assert sorted(p.name for p in (tmp_path / DAY).iterdir()) == [f"{UID}-2.wav"]


async def test_a_file_the_disk_could_not_take_is_short(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path, short_tolerance_seconds=1)
    ch = MixMonitorChannel(talk_bytes=65536 - 44)  # a 64 KiB tmpfs, full 4 s into a 7.5 s talk
    w = waiter_on(ch, clock)
    await ring(recorder, clock, w, offer(), answer_after=1, talk=7.5)
    await recorder.drain()
    [r] = results.r.recorded
    assert (r.status, r.reason) == (RecordingStatus.SHORT, "4.1 s recorded of 7.5 s of talk")


async def test_mixmonitor_started_but_no_file_is_missing(tmp_path) -> None:
    """MixMonitorStart comes even when the file cannot be opened: the file, not the event, decides."""
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(creates_file=False)
    w = waiter_on(ch, clock)
    task = asyncio.ensure_future(ring(recorder, clock, w, offer(), answer_after=1, talk=5))
    await task
    clock.advance(61)  # recording.finish_wait_seconds (60) passes without a file
    await recorder.drain()
    [r] = results.r.recorded
    assert (r.status, r.reason, r.seconds, r.bytes) == (RecordingStatus.MISSING, "no file", None, None)


async def test_a_file_never_closed_is_short_once_the_wait_is_over(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path, finish_wait_seconds=30)
    ch = MixMonitorChannel()
    w = waiter_on(ch, clock)
    o = offer()
    w.dialling_offer = o
    rec = await recorder.start(w, o)
    w.answered_offer, w.answered_mono = o.offer_id, clock.monotonic()
    clock.advance(5)
    (tmp_path / rec.name).write_bytes(wav_header(0, riff_size=0) + b"\x00" * 32768)  # buffered, never closed
    ch._hung_up = True
    recorder.abandon(rec, w)
    w.dialling_offer = None
    await asyncio.sleep(0.02)
    assert results.r.recorded == []
    clock.advance(31)
    await recorder.drain()
    [r] = results.r.recorded
    assert r.status is RecordingStatus.SHORT and "never finished" in r.reason


@pytest.mark.parametrize("setup, kind, words", [
    ("missing", "no_directory", "does not exist"),
    ("low", "low_space", "below recording.min_free_mb"),
    ("read-only", "not_writable", "is not writable"),
])
async def test_a_recording_that_cannot_be_made_is_skipped_and_the_call_goes_on(tmp_path, monkeypatch, setup, kind,
                                                                            words) -> None:
    root = tmp_path / "rec"
    extra = {}
    if setup != "missing":
        root.mkdir()
    if setup == "low":
        extra["min_free_mb"] = 10 ** 9
    if setup == "read-only":
        real = os.statvfs

        class ReadOnly:
            def __init__(self, st) -> None:
                self._st = st

            def __getattr__(self, name):
                return os.ST_RDONLY | self._st.f_flag if name == "f_flag" else getattr(self._st, name)

        monkeypatch.setattr(recording_module.os, "statvfs", lambda p: ReadOnly(real(p)))
    recorder, results, clock = recorder_for(root, **extra)
    ch = MixMonitorChannel()
    w = waiter_on(ch, clock)
    rec = await ring(recorder, clock, w, offer(), answer_after=1, talk=5)
    await recorder.drain()
    assert rec.skipped is not None and words in rec.skipped
    assert not any(op[:2] == ("exec", "MixMonitor") for op in ch.ops)
    assert not any(op[:2] == ("exec", "StopMixMonitor") for op in ch.ops)
    assert [(u, k) for u, k, _ in results.r.skipped] == [(UID, kind)]
    [r] = results.r.recorded  # the answered call has a row that says why there is no file
    assert r.status is RecordingStatus.MISSING and r.reason.startswith("not recorded: ") and words in r.reason
    assert r.talk_seconds == 5.0


async def test_a_skipped_recording_of_an_unanswered_offer_leaves_no_row(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path / "nowhere")
    w = waiter_on(MixMonitorChannel(), clock)
    await ring(recorder, clock, w, offer(), answer_after=None)
    await recorder.drain()
    assert results.r.recorded == [] and [k for _, k, _ in results.r.skipped] == ["no_directory"]


@pytest.mark.parametrize("result, words", [(-2, "not available"), (-1, "failed")])
async def test_mixmonitor_refused_is_a_skip(tmp_path, result, words) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(mixmonitor_result=result)
    w = waiter_on(ch, clock)
    rec = await ring(recorder, clock, w, offer(), answer_after=1, talk=3)
    await recorder.drain()
    assert words in rec.skipped and not any(op[:2] == ("exec", "StopMixMonitor") for op in ch.ops)
    assert [k for _, k, _ in results.r.skipped] == ["mixmonitor"]


async def test_a_uniqueid_that_cannot_be_a_file_name_is_not_recorded(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(uniqueid="SIP/evil;../..")
    w = waiter_on(ch, clock)
    await ring(recorder, clock, w, offer(uid="SIP/evil;../.."), answer_after=1, talk=3)
    await recorder.drain()
    assert not any(op[:2] == ("exec", "MixMonitor") for op in ch.ops)
    assert [k for _, k, _ in results.r.skipped] == ["name"]
    [r] = results.r.recorded
    assert r.status is RecordingStatus.MISSING and not is_recording_name(r.path)


async def test_a_hang_up_while_mixmonitor_starts_ends_the_script_and_cleans_up(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path)

    class GoneAfterMixMonitor(MixMonitorChannel):  # GET VARIABLE CC_MIXMON: the caller is gone
        async def get_variable(self, name, *, allow_dead=False):
            self._hung_up = True
            raise CallerHungUp()

    ch = GoneAfterMixMonitor()
    w = waiter_on(ch, clock)
    o = offer()
    w.dialling_offer = o
    with pytest.raises(CallerHungUp):
        await recorder.start(w, o)
    w.dialling_offer = None
    ch.talk_bytes = 0
    ch.close_files()  # the channel went: MixMonitor closed its (empty) file
    await recorder.drain()
    assert results.r.recorded == [] and recorder.checking == 0


async def test_separate_legs(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path, separate_legs=True)
    ch = MixMonitorChannel(talk_bytes=16000 * 4)
    w = waiter_on(ch, clock)
    await ring(recorder, clock, w, offer(), answer_after=1, talk=4)
    await recorder.drain()
    [r] = results.r.recorded
    assert r.status is RecordingStatus.COMPLETE and r.separate_legs
    names = sorted(p.name for p in (tmp_path / DAY).iterdir())
    assert names == [f"{UID}-1-agent.wav", f"{UID}-1-caller.wav", f"{UID}-1.wav"]


async def test_a_missing_leg_makes_it_short(tmp_path) -> None:
    recorder, results, clock = recorder_for(tmp_path, separate_legs=True)
    ch = MixMonitorChannel(talk_bytes=16000 * 4)
    w = waiter_on(ch, clock)
    o = offer()
    w.dialling_offer = o
    rec = await recorder.start(w, o)
    ch.open_files = [p for p in ch.open_files if not p.name.endswith("-agent.wav")]
    (tmp_path / DAY / f"{UID}-1-agent.wav").unlink()
    w.answered_offer, w.answered_mono = o.offer_id, clock.monotonic()
    clock.advance(4)
    await recorder.stop(rec, w)
    w.dialling_offer = None
    await recorder.drain()
    [r] = results.r.recorded
    assert r.status is RecordingStatus.SHORT and f"{UID}-1-agent.wav" in r.reason


async def test_the_announcements(tmp_path) -> None:
    clock = FakeClock()
    ch = MixMonitorChannel()
    w = waiter_on(ch, clock)
    quiet, _, _ = recorder_for(tmp_path, announcement={"to_caller": False, "at_answer": False})
    await quiet.announce(ch, w.call)
    assert ch.ops == []
    loud, _, _ = recorder_for(tmp_path, clock, announcement={"to_caller": True, "at_answer": True})
    await loud.announce(ch, w.call)
    assert ch.ops == [("play", ["en/call-recorded"])] and w.call.path == ["rec-notice"]
    rec = await loud.start(w, offer())
    assert rec.dial_options == "A(callcentre/en/call-recorded:callcentre/en/call-recorded)"
    with wave.open(str(REPO / "prompts" / "en" / "call-recorded.wav"), "rb") as f:
        seconds = f.getnframes() / f.getframerate()
    assert loud.unrecorded_seconds("en") == pytest.approx(2 * seconds)  # to the agent, then to the caller
    await loud.stop_all()


# ------------------------------------------------------------------------------ the wait script and ACD

class RecordingRoom:
    """A waiting room whose first offer is answered (or not) and a recorder fake that notes the order."""

    def __init__(self, *, answered: bool) -> None:
        self.answered = answered
        self.calls: list[tuple] = []

    def enter(self, w: Waiter) -> None:
        w.deliver(MakeOffer(offer()))

    def take_offer(self, w, o) -> bool:
        return True

    def dialling(self, w, o) -> None:
        self.calls.append(("dialling", o.offer_id))

    def dial_returned(self, w, o, status, written_at) -> bool:
        self.calls.append(("dial_returned", status))
        w.dialling_offer = None
        w.go("answered")
        return True

    def withdraw(self, w, reason) -> None:
        self.calls.append(("withdraw", reason))

    def on_duty_answered(self, w) -> None:
        pass

    def handed_over(self, w) -> bool:  # the WaitingRoom port: no transfer here
        return False

    async def book_callback(self, w):
        return None

    def leaving(self, w) -> None:
        self.calls.append(("leaving",))

    def left(self, w, status) -> None:
        self.calls.append(("left", status))


class NotingRecorder:
    def __init__(self, calls: list[tuple], ch: FakeChannel) -> None:
        self.calls, self.ch = calls, ch

    async def announce(self, ch, call) -> None:
        self.calls.append(("announce",))

    async def start(self, w, o) -> ActiveRecording:
        self.calls.append(("start", o.offer_id, len(self.ch.ops)))
        return ActiveRecording(o.offer_id, o.agent_id, "x", 0.0, FakeClock().now(), dial_options="A(p:p)")

    async def stop(self, rec, w) -> None:
        self.calls.append(("stop", rec.offer_id, w.state.value))

    def abandon(self, rec, w) -> None:
        self.calls.append(("abandon", rec.offer_id))


async def test_the_wait_script_starts_the_recording_before_the_dial_and_stops_it_after() -> None:
    room = RecordingRoom(answered=True)
    ch = FakeChannel(variables={"DIALSTATUS": "ANSWER"})
    recorder = NotingRecorder(room.calls, ch)
    w = waiter_on(ch, FakeClock())
    from callcentre.config import ACDConfig

    outcome = await WaitScript(w, room, ACDConfig(satisfaction_survey=False), FakeClock(), FakeTicketStore(),
                               recorder).run()
    assert outcome is Outcome.DONE
    dial = [i for i, op in enumerate(ch.ops) if op[:2] == ("exec", "Dial")]
    assert ch.ops[dial[0]] == ("exec", "Dial", "PJSIP/agent1", "10", "A(p:p)")
    started = next(c for c in room.calls if c[0] == "start")
    assert started[2] <= dial[0]  # MixMonitor before the Dial
    order = [c[0] for c in room.calls]
    assert order[:4] == ["dialling", "start", "stop", "dial_returned"]
    assert ("stop", f"{UID}#1", "dialling") in room.calls  # stopped before the script looked at the outcome


async def test_a_hang_up_during_the_dial_abandons_the_recording() -> None:
    room = RecordingRoom(answered=True)
    ch = FakeChannel(hangup_at=3)  # music_on, music_off, then the Dial: the caller hangs up
    recorder = NotingRecorder(room.calls, ch)
    w = waiter_on(ch, FakeClock())
    from callcentre.config import ACDConfig

    with pytest.raises(CallerHungUp):
        await WaitScript(w, room, ACDConfig(), FakeClock(), FakeTicketStore(), recorder).run()
    assert ("abandon", f"{UID}#1") in room.calls and not any(c[0] == "stop" for c in room.calls)


async def test_the_on_duty_phone_answering_an_emergency_at_night_is_recorded_too(tmp_path) -> None:
    from callcentre.config import ACDConfig
    from callcentre.domain.acd import RingOnDuty

    class Night(RecordingRoom):
        def enter(self, w: Waiter) -> None:
            w.deliver(RingOnDuty(UID, UID, "PJSIP/duty"))

        def on_duty_answered(self, w) -> None:
            self.calls.append(("on_duty_answered",))

    recorder, results, clock = recorder_for(tmp_path)
    ch = MixMonitorChannel(talk_bytes=16000 * 3, variables={"DIALSTATUS": "ANSWER"})
    room = Night(answered=True)
    w = waiter_on(ch, clock)
    outcome = await WaitScript(w, room, ACDConfig(), clock, FakeTicketStore(), recorder).run()
    await recorder.drain()
    assert outcome is Outcome.DONE and ("on_duty_answered",) in room.calls
    assert ("exec", "Dial", "PJSIP/duty", "30") in ch.ops
    [r] = results.r.recorded
    assert (r.offer_id, r.agent_id, r.path, r.status) == (f"{UID}#0", "on-duty", f"{DAY}/{UID}-0.wav",
                                                         RecordingStatus.COMPLETE)
    assert r.reason == "talk time unknown: the length was not checked"


async def test_call_distribution_announces_records_and_measures_the_talk_from_ami(tmp_path) -> None:
    """ACDService with the recorder: the notice before anyone rings, MixMonitor before the Dial, the answer
    time from AMI DialEnd, StopMixMonitor when the agent hangs up, a complete row."""
    from callcentre.distribution import ACDService
    from callcentre.domain.acd import Agent

    clock = FakeClock()
    results = ResultsPort()
    cfg = Config.model_validate({"acd": {"satisfaction_survey": False},
                                 "recording": {"enabled": True, "directory": str(tmp_path), "asterisk_directory": str(tmp_path),
                                               "min_free_mb": 0},
                                 "prompts": {"local_dir": str(REPO / "prompts")}})
    acd_ref: list[ACDService] = []
    recorder = MixMonitorRecorder(cfg, clock, results, agent_login=lambda a: acd_ref[0].agent_login(a))
    recorder.poll_seconds = 0.002
    acd = ACDService(cfg, clock, FakeTicketStore(), recorder=recorder)
    acd_ref.append(acd)
    acd.load_agents([Agent("7", "Agent One", "a1", "PJSIP/agent1", frozenset({"repair"}), frozenset({"zh", "en"}))], {},
                    {"7"})

    class Caller(MixMonitorChannel):
        async def exec(self, application, *args):
            result = await super().exec(application, *args)
            if application == "Dial":
                acd.dial_begin(self.uniqueid, "1795351990.2", "PJSIP/agent1-0000002a", clock.monotonic())
                clock.advance(2)
                acd.dial_end(self.uniqueid, "1795351990.2", "ANSWER", clock.monotonic())
                clock.advance(9.5)  # the talk; then the agent hangs up
                self.variables["DIALSTATUS"] = "ANSWER"
            return result

    ch = Caller(talk_bytes=16000 * 9)
    call = waiter_on(ch, clock).call
    outcome = await asyncio.wait_for(acd.connect(ch, call, reason="caller-asked", skill=None, emergency=False), 5)
    assert outcome is Outcome.DONE
    await recorder.drain()
    apps = [op[1] if op[0] == "exec" else op[1][0] if op[0] == "play" else None for op in ch.ops]
    apps = [a for a in apps if a in ("en/call-recorded", "MixMonitor", "Dial", "StopMixMonitor")]
    assert apps == ["en/call-recorded", "MixMonitor", "Dial", "StopMixMonitor"]
    [r] = results.r.recorded
    assert (r.status, r.talk_seconds, r.seconds, r.agent_login) == (RecordingStatus.COMPLETE, 9.5, 9.0, "a1")
    await acd.stop()


# ------------------------------------------------------------------------------ configuration and roles

@pytest.mark.parametrize("value", ["relative/dir", "/var/rec,b", "/var/rec dir", "/var/(rec)", "/var/../etc", "/var/./x",
                                   "/var/rec\n", ""])
def test_asterisk_directory_must_be_safe_for_mixmonitor(value) -> None:
    with pytest.raises(ValidationError, match="asterisk_directory"):
        Config.model_validate({"recording": {"asterisk_directory": value}})


def test_recording_config_defaults_and_checks() -> None:
    rc = RecordingConfig()
    assert not rc.enabled and rc.retention_days == 90 and rc.announcement.to_caller and not rc.announcement.at_answer
    assert RecordingConfig(asterisk_directory="/var/spool/rec/").asterisk_directory == "/var/spool/rec"
    with pytest.raises(ValidationError, match="directory"):
        RecordingConfig(directory="relative")
    with pytest.raises(ValidationError):
        RecordingConfig(retention_days=0)
    with pytest.raises(ValidationError):
        RecordingConfig(min_free_mb=-1)


def _user(role: UserRole, uid: int = 5) -> UserView:
    return UserView(uid, role.value, role.value, role, True, None, (), (), False, None)


def test_who_may_hear_recordings() -> None:
    for role in (UserRole.SUPERVISOR, UserRole.ADMIN, UserRole.QUALITY):
        check_recordings(_user(role))
    with pytest.raises(Forbidden):
        check_recordings(_user(UserRole.AGENT))


def test_the_quality_department_controls_no_agent_and_lands_on_the_calls_page() -> None:
    qa = _user(UserRole.QUALITY)
    for action in AgentAction:
        with pytest.raises(Forbidden):
            check_state_change(qa, 7, action)
    assert home_page(qa) == "/calls"
