"""Agent call recording, the adapter: MixMonitor from the caller's FastAGI session, then the file checked.

:class:`MixMonitorRecorder` is the wait script's :class:`~callcentre.domain.recordings.CallRecorder`:

* ``announce``: "this call may be recorded" (prompt ``call-recorded``) to the caller as they join the
  queue, in their language;
* ``start``, just before each offer's ``EXEC Dial``: checks that the recording directory is writable and has
  ``recording.min_free_mb`` free (``os.statvfs``), then ``EXEC MixMonitor <file>,bi(CC_MIXMON)`` (plus
  ``r()``/``t()`` for the two sides apart). Not AMI: the action needs the ``system`` class, which our AMI
  account must not have. A full or read-only directory skips the recording (logged with the uniqueid,
  counted, on the wallboard); it never fails the call. Asterisk itself does not drop a call for a full
  disk either (docs/research-recording-transfers.md);
* ``stop``, when the Dial returns with the caller still there (the survey follows): ``EXEC StopMixMonitor
  <id>``, which closes the file at once; ``abandon``, after a hang-up: nothing to send, the file is
  closed when the channel goes (the end of the FastAGI session);
* then, in a task of its own (kept, cancelled and awaited at shutdown), the file is read until its WAV
  header is finished and judged against the talk time (:func:`~callcentre.domain.recordings.judge`); the
  result goes to :class:`callcentre.service.recordings.RecordingService` (the row, counters, alerts). An
  offer that was not answered leaves an empty file, which is removed.
"""

from __future__ import annotations

import asyncio
import os
import re
import wave
from pathlib import Path
from typing import Callable, Protocol
from zoneinfo import ZoneInfo

import structlog

from callcentre.config import Config
from callcentre.domain.acd import Offer
from callcentre.domain.calls import CallInfo
from callcentre.domain.ports import CallerHungUp, Channel, ChannelError, Clock
from callcentre.domain.recordings import (
    MIXMONITOR_ID,
    MIXMONITOR_ID_VARIABLE,
    ActiveRecording,
    RecordingResult,
    RecordingStatus,
    UnusableName,
    judge,
    leg_names,
    mixmonitor_arguments,
    parse_wav,
    recording_name,
)
from callcentre.domain.waiting import Waiter
from callcentre.tasks import cancel_and_wait

log = structlog.get_logger("callcentre.recording")

ANNOUNCEMENT = "call-recorded"
POLL_SECONDS = 0.25
_HEAD_BYTES = 512
_PROMPT_PATH = re.compile(r"^[A-Za-z0-9_./\-]{1,100}\Z")  # safe inside Dial's A(...)


class RecordingResults(Protocol):
    """Where the outcome goes (``callcentre.service.recordings.RecordingService``)."""

    async def recorded(self, result: RecordingResult) -> None:
        """A checked recording of an answered call: store its row; alert when missing or short."""

    def skipped(self, uniqueid: str, kind: str, reason: str) -> None:
        """A recording was not started; ``kind``: no_directory, not_writable, low_space, mixmonitor, name."""


class MixMonitorRecorder:
    def __init__(self, cfg: Config, clock: Clock, results: RecordingResults, *,
                 agent_login: Callable[[str], str | None] = lambda _agent_id: None) -> None:
        """``agent_login``: an agent's login from its id (call distribution's), for the row."""
        self.rc = cfg.recording
        self.clock = clock
        self.results = results
        self.agent_login = agent_login
        self.tz = ZoneInfo(cfg.centre.timezone)
        self.prompt_path = cfg.prompts.asterisk_path.strip("/")
        self.local_prompts = Path(cfg.prompts.local_dir)
        self._prompt_seconds: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.poll_seconds = POLL_SECONDS  # how often the file is looked at until it is finished

    # ------------------------------------------------------------------ the CallRecorder port

    async def announce(self, ch: Channel, call: CallInfo) -> None:
        if not self.rc.announcement.to_caller:
            return
        await ch.play([call.prompt(ANNOUNCEMENT)])  # the hotline's own recording of it, else the shared one
        call.path.append("rec-notice")

    async def start(self, waiter: Waiter, offer: Offer) -> ActiveRecording:
        call = waiter.call
        rec = ActiveRecording(offer_id=offer.offer_id, agent_id=offer.agent_id, name="",
                              started_mono=self.clock.monotonic(), started_at=self.clock.now(),
                              dial_options=self._answer_announcement(call.language))
        try:
            rec.name = recording_name(call.uniqueid, offer.offer_id, self.clock.now().astimezone(self.tz).date())
        except UnusableName as exc:
            return self._skip(rec, call.uniqueid, "name", str(exc))
        problem = await asyncio.to_thread(self.space_problem)
        if problem is not None:
            return self._skip(rec, call.uniqueid, *problem)
        file, options = mixmonitor_arguments(self.rc.asterisk_directory, rec.name, separate_legs=self.rc.separate_legs)
        try:
            result = await waiter.ch.exec("MixMonitor", file, options)
            if result == -2:
                return self._skip(rec, call.uniqueid, "mixmonitor", "MixMonitor is not available (load app_mixmonitor.so)")
            if result < 0:
                return self._skip(rec, call.uniqueid, "mixmonitor", f"MixMonitor failed (result {result})")
            mid = await waiter.ch.get_variable(MIXMONITOR_ID_VARIABLE)
        except ChannelError as exc:
            return self._skip(rec, call.uniqueid, "mixmonitor", f"MixMonitor refused: {exc}")
        except (CallerHungUp, asyncio.CancelledError):
            rec.ended_mono = self.clock.monotonic()
            self._check_later(rec, waiter)  # MixMonitor may be attached: its empty file is removed
            raise
        rec.mixmonitor_id = mid if mid and MIXMONITOR_ID.match(mid) else None
        waiter.log.info("recording started", offer=offer.offer_id, file=rec.name, mixmonitor=rec.mixmonitor_id)
        return rec

    async def stop(self, rec: ActiveRecording, waiter: Waiter) -> None:
        rec.ended_mono = self.clock.monotonic()
        try:
            if rec.running and not waiter.ch.hung_up:
                # With the id, only this MixMonitor (without, StopMixMonitor stops the channel's last one).
                await waiter.ch.exec("StopMixMonitor", *((rec.mixmonitor_id,) if rec.mixmonitor_id else ()))
        except (CallerHungUp, ChannelError) as exc:
            waiter.log.info("recording not stopped; the file closes when the channel goes", offer=rec.offer_id,
                            error=str(exc) or type(exc).__name__)
        finally:
            self._check_later(rec, waiter)

    def abandon(self, rec: ActiveRecording, waiter: Waiter) -> None:
        if rec.ended_mono is None:
            rec.ended_mono = self.clock.monotonic()
        self._check_later(rec, waiter)

    # ------------------------------------------------------------------ lifecycle

    async def drain(self, within: float | None = None) -> None:
        """Wait for the files being checked (at shutdown); those still waiting after ``within`` s are cancelled."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=within)
        await cancel_and_wait(*pending)

    async def stop_all(self) -> None:
        await cancel_and_wait(*self._tasks)

    @property
    def checking(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------ checks

    def space_problem(self) -> tuple[str, str] | None:
        """Why a recording cannot be started now, as (kind, words); None: it can. Blocking: run in a thread.

        Checked as this server sees the directory: on a shared mount, Asterisk's side may still fail
        (then the file tells, after the call)."""
        root = Path(self.rc.directory)
        try:
            if not root.is_dir():
                return "no_directory", f"the recording directory {root} does not exist"
            st = os.statvfs(root)
        except OSError as exc:
            return "no_directory", f"the recording directory {root} cannot be read: {exc.strerror or exc}"
        if st.f_flag & os.ST_RDONLY or not os.access(root, os.W_OK | os.X_OK):
            return "not_writable", f"the recording directory {root} is not writable"
        free_mb = st.f_bavail * st.f_frsize / 1048576
        if free_mb < self.rc.min_free_mb:
            return "low_space", f"{free_mb:.2f} MB free in {root}, below recording.min_free_mb ({self.rc.min_free_mb:g})"
        return None

    def _skip(self, rec: ActiveRecording, uniqueid: str, kind: str, reason: str) -> ActiveRecording:
        rec.skipped = reason
        self.results.skipped(uniqueid, kind, reason)
        return rec

    def _answer_announcement(self, language: str) -> str:
        """Dial's ``A(<to the agent>:<to the caller>)``, when configured."""
        if not self.rc.announcement.at_answer:
            return ""
        prompt = f"{self.prompt_path}/{language}/{ANNOUNCEMENT}"
        if not _PROMPT_PATH.match(prompt):
            log.warning("announcement at answer left out: prompts.asterisk_path cannot go into Dial's A()",
                        prompt=prompt)
            return ""
        return f"A({prompt}:{prompt})"

    def unrecorded_seconds(self, language: str) -> float:
        """How much of the talk A() takes before the bridge (agent's then caller's), from our own WAV."""
        if not self.rc.announcement.at_answer:
            return 0.0
        if language not in self._prompt_seconds:
            try:
                with wave.open(str(self.local_prompts / language / f"{ANNOUNCEMENT}.wav"), "rb") as w:
                    self._prompt_seconds[language] = 2 * w.getnframes() / float(w.getframerate())
            except (OSError, wave.Error, EOFError):
                self._prompt_seconds[language] = 0.0
        return self._prompt_seconds[language]

    def _check_later(self, rec: ActiveRecording, waiter: Waiter) -> None:
        task = asyncio.create_task(self._check(rec, waiter), name=f"recording-check-{rec.offer_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording check failed", task=task.get_name(), error=repr(task.exception()))

    async def _check(self, rec: ActiveRecording, waiter: Waiter) -> None:
        """Once the Dial is over for call distribution too, and the file is closed: what it is."""
        uniqueid = waiter.call.uniqueid
        clog = waiter.log.bind(offer=rec.offer_id)
        deadline = self.clock.monotonic() + self.rc.finish_wait_seconds
        path = Path(self.rc.directory) / rec.name
        exists, size, info = False, 0, None
        while True:
            # Whether this offer was answered is settled once the script is done with it (dial_returned or
            # left); the file is done once MixMonitor wrote its header (StopMixMonitor, or the channel gone).
            settled = waiter.dialling_offer is None or waiter.dialling_offer.offer_id != rec.offer_id
            if rec.running:
                exists, size, head = await asyncio.to_thread(_read_head, path)
                info = parse_wav(head, size) if exists else None
            if (settled and (not rec.running or (info is not None and info.finished))) \
                    or self.clock.monotonic() >= deadline:
                break
            await asyncio.sleep(self.poll_seconds)
        answered = waiter.answered_offer == rec.offer_id
        talk = None
        if answered and waiter.answered_mono is not None and rec.ended_mono is not None:
            talk = max(0.0, rec.ended_mono - waiter.answered_mono)
        if rec.skipped is not None:
            if answered:
                await self._report(rec, waiter, RecordingStatus.MISSING, f"not recorded: {rec.skipped}", None, None,
                                   talk=talk)
            return
        if not answered and (info is None or info.data_bytes == 0):
            if exists and (info is None or info.finished):
                removed = await asyncio.to_thread(_remove, [path, *self._leg_paths(rec)])
                clog.debug("offer not answered: its empty recording removed", files=removed)
            return
        verdict = judge(info, exists=exists, size=size, talk_seconds=talk,
                        unrecorded_seconds=self.unrecorded_seconds(waiter.call.language),
                        tolerance_seconds=self.rc.short_tolerance_seconds)
        status, reason = verdict.status, verdict.reason
        if self.rc.separate_legs and status is RecordingStatus.COMPLETE:
            bad = [p.name for p in self._leg_paths(rec) if not await asyncio.to_thread(_finished, p)]
            if bad:
                status, reason = RecordingStatus.SHORT, f"the separate legs are missing or unfinished: {', '.join(bad)}"
        if not answered:
            reason = "; ".join(filter(None, [reason, "the answer was not seen: length not checked"]))
        await self._report(rec, waiter, status, reason, verdict.seconds, verdict.bytes, talk=talk)
        clog.info("recording checked", status=status.value, reason=reason, seconds=verdict.seconds, bytes=verdict.bytes,
                  talk_seconds=None if talk is None else round(talk, 1), file=rec.name, uniqueid=uniqueid)

    def _leg_paths(self, rec: ActiveRecording) -> list[Path]:
        if not self.rc.separate_legs or not rec.name:
            return []
        return [Path(self.rc.directory) / n for n in leg_names(rec.name)]

    async def _report(self, rec: ActiveRecording, waiter: Waiter, status: RecordingStatus, reason: str | None,
                      seconds: float | None, size: int | None, *, talk: float | None = None) -> None:
        from datetime import timedelta

        now_mono = self.clock.monotonic()
        answered_at = None
        if waiter.answered_mono is not None:
            answered_at = self.clock.now() - timedelta(seconds=max(0.0, now_mono - waiter.answered_mono))
        ended_at = None
        if rec.ended_mono is not None:
            ended_at = self.clock.now() - timedelta(seconds=max(0.0, now_mono - rec.ended_mono))
        await self.results.recorded(RecordingResult(
            call_uniqueid=waiter.call.uniqueid, offer_id=rec.offer_id, agent_id=rec.agent_id,
            agent_login=self.agent_login(rec.agent_id), path=rec.name or f"{waiter.call.uniqueid}#{rec.offer_id}",
            separate_legs=self.rc.separate_legs and rec.skipped is None,
            started_at=answered_at or rec.started_at, ended_at=ended_at,
            talk_seconds=None if talk is None else round(talk, 2), seconds=seconds, bytes=size, status=status,
            reason=reason,
        ))


def _read_head(path: Path) -> tuple[bool, int, bytes]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return True, size, f.read(_HEAD_BYTES)
    except FileNotFoundError:
        return False, 0, b""
    except OSError:
        return False, 0, b""


def _finished(path: Path) -> bool:
    exists, size, head = _read_head(path)
    info = parse_wav(head, size) if exists else None
    return info is not None and info.finished


def _remove(paths: list[Path]) -> list[str]:
    removed = []
    for p in paths:
        try:
            p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


__all__ = ["ANNOUNCEMENT", "MixMonitorRecorder", "RecordingResults"]
