"""Call recordings as a service: the rows, the alerts, retention, the disk, and what the pages may play.

* :meth:`RecordingService.recorded` / :meth:`~RecordingService.skipped` are where the recorder
  (:mod:`callcentre.distribution.recording`) reports: a row per answered offer, counted by status; a
  missing or short recording, and a recording skipped because the directory is full or not writable, is a
  wallboard alert (skips at most once a minute per kind, with the number since).
* Retention (a :func:`~callcentre.tasks.run_periodically` loop every ``recording.retention_check_seconds``)
  deletes the files of calls older than ``recording.retention_days``, marks their rows ``deleted``, removes
  files no row points to once they are that old, and measures the directory (bytes, files, free space)
  for /health and /metrics.
* The web asks by id only (:meth:`~RecordingService.file`): the row gives the server-made relative name,
  checked again, joined to the root and resolved inside it; supervisors, administrators and the quality
  department only (:func:`callcentre.domain.users.check_recordings`).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

import structlog

from callcentre.config import Config
from callcentre.domain.errors import NotFound
from callcentre.domain.ports import Clock, StorageUnavailable
from callcentre.domain.recordings import RecordingResult, RecordingStatus, is_recording_name, leg_names
from callcentre.domain.users import UserView, check_recordings
from callcentre.service.alerts import WALLBOARD
from callcentre.storage.recordings import CallHistoryRow, RecordingsRepo, StoredRecording
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger("callcentre.recording")

Publish = Callable[[str, Mapping[str, Any]], None]
SKIP_ALERT_EVERY_SECONDS = 60.0
RETENTION_BATCH = 500
LEGS = ("caller", "agent")
_DATE_DIR = re.compile(r"^[0-9]{4}(/[0-9]{2}(/[0-9]{2})?)?\Z")


class RecordingNotFound(NotFound):
    code = "recording_not_found"


class RecordingGone(NotFound):
    """The row exists, the file does not (deleted by retention, or never made)."""

    code = "recording_file_missing"


@dataclass
class DiskUsage:
    """The recording directory, as last measured."""

    directory: str
    exists: bool
    files: int = 0
    bytes: int = 0  # the recordings' sizes
    free_bytes: int | None = None  # for this server (f_bavail)
    total_bytes: int | None = None
    writable: bool = False
    measured_at: str | None = None
    seconds_to_measure: float | None = None


@dataclass
class RetentionPass:
    deleted: int = 0
    freed_bytes: int = 0
    orphans: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """A file the web may stream: the path the server built, its size, and its row."""

    path: Path
    size: int
    recording: StoredRecording
    leg: str | None


class RecordingService:
    def __init__(self, cfg: Config, repo: RecordingsRepo, clock: Clock, publish: Publish) -> None:
        self.cfg = cfg
        self.rc = cfg.recording
        self.repo = repo
        self.clock = clock
        self.publish = publish
        self.tz = ZoneInfo(cfg.centre.timezone)
        self.counts: dict[str, int] = {s.value: 0 for s in RecordingStatus if s is not RecordingStatus.DELETED}
        self.skips: dict[str, int] = {}
        self.deleted_total = 0
        self._skip_alerted: dict[str, tuple[float, int]] = {}  # kind -> (when alerted, skips since)
        self._usage: DiskUsage | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def root(self) -> Path:
        return Path(self.rc.directory)

    # ------------------------------------------------------------------ what the recorder reports

    async def recorded(self, result: RecordingResult) -> None:
        rlog = log.bind(uniqueid=result.call_uniqueid, offer=result.offer_id, agent=result.agent_login)
        try:
            rec_id: int | None = await self.repo.add(result, self.clock.now())
        except StorageUnavailable as exc:
            rec_id = None
            rlog.error("recording row not saved", error=str(exc), row=_row_log(result))
        self.counts[result.status.value] = self.counts.get(result.status.value, 0) + 1
        if result.bytes and self._usage is not None:
            self._usage.bytes += result.bytes
            self._usage.files += 1
        if result.status in (RecordingStatus.MISSING, RecordingStatus.SHORT):
            rlog.warning("recording " + result.status.value, reason=result.reason, recording_id=rec_id,
                         seconds=result.seconds, talk_seconds=result.talk_seconds)
            who = f" (agent {result.agent_login})" if result.agent_login else ""
            self.publish(WALLBOARD, {
                "type": f"recording_{result.status.value}", "uniqueid": result.call_uniqueid, "recording_id": rec_id,
                "message": f"Recording of call {result.call_uniqueid}{who} is {result.status.value}: {result.reason}",
            })
        else:
            rlog.info("recording saved", recording_id=rec_id, seconds=result.seconds, bytes=result.bytes)

    def skipped(self, uniqueid: str, kind: str, reason: str) -> None:
        self.skips[kind] = self.skips.get(kind, 0) + 1
        log.warning("recording skipped; the call goes on", uniqueid=uniqueid, kind=kind, reason=reason)
        now = self.clock.monotonic()
        last = self._skip_alerted.get(kind)
        if last is not None and now - last[0] < SKIP_ALERT_EVERY_SECONDS:
            self._skip_alerted[kind] = (last[0], last[1] + 1)
            return
        since = f" ({last[1]} more skipped since the last alert)" if last is not None and last[1] else ""
        self._skip_alerted[kind] = (now, 0)
        self.publish(WALLBOARD, {"type": "recording_skipped", "uniqueid": uniqueid, "kind": kind,
                                 "message": f"Calls are not being recorded: {reason}{since}"})

    # ------------------------------------------------------------------ the retention loop

    async def start(self) -> None:
        self._task = asyncio.create_task(
            run_periodically("recording-retention", self.retention_once, self.rc.retention_check_seconds),
            name="recording-retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def retention_once(self) -> RetentionPass:
        """Delete what is older than ``retention_days`` (files, then the rows marked), then measure the disk."""
        result = RetentionPass()
        now = self.clock.now()
        cutoff = now - timedelta(days=self.rc.retention_days)
        if not self.root.is_dir():
            log.debug("recording directory not there: nothing to keep or delete", directory=str(self.root))
            self._usage = await asyncio.to_thread(self._measure)
            return result
        while True:
            due = await self.repo.due_for_deletion(cutoff, RETENTION_BATCH)
            if not due:
                break
            done: list[int] = []
            for rec in due:
                ok, freed, error = await asyncio.to_thread(self._delete_files, rec)
                if ok:
                    done.append(rec.id)
                    result.freed_bytes += freed
                else:
                    result.failed += 1
                    result.errors.append(error)
            await self.repo.mark_deleted(done, now, f"deleted after {self.rc.retention_days} days")
            result.deleted += len(done)
            self.deleted_total += len(done)
            log.info("recordings deleted by retention", batch=len(due), deleted=len(done), failed=len(due) - len(done),
                     freed_bytes=result.freed_bytes, older_than=cutoff.isoformat())
            if len(done) < len(due):  # files that could not be removed: tried again next pass, not in a loop
                break
        result.orphans = await self._remove_orphans(cutoff)
        await asyncio.to_thread(self._prune)
        self._usage = await asyncio.to_thread(self._measure)
        if result.deleted or result.orphans or result.failed:
            log.info("recording retention pass", deleted=result.deleted, orphans=result.orphans, failed=result.failed,
                     freed_bytes=result.freed_bytes, errors=result.errors[:3], directory_bytes=self._usage.bytes,
                     free_bytes=self._usage.free_bytes)
        return result

    def _files_of(self, rec: StoredRecording) -> list[Path]:
        if not is_recording_name(rec.path):
            return []
        names = [rec.path, *(leg_names(rec.path) if rec.separate_legs else ())]
        return [self.root / n for n in names]

    def _delete_files(self, rec: StoredRecording) -> tuple[bool, int, str]:
        freed = 0
        for p in self._files_of(rec):
            try:
                size = p.stat().st_size
                p.unlink()
                freed += size
            except FileNotFoundError:
                continue
            except OSError as exc:
                return False, freed, f"{rec.path}: {exc.strerror or exc}"
        return True, freed, ""

    async def _remove_orphans(self, cutoff: datetime) -> int:
        """Files older than the cutoff that no row points to (a crash before the check, a row not saved)."""
        old = await asyncio.to_thread(self._old_files, cutoff.timestamp())
        if not old:
            return 0
        bases = {_base_name(n): n for n in old}
        known = await self.repo.known_paths(sorted(set(bases)))
        orphans = [n for n in old if _base_name(n) not in known]
        removed = await asyncio.to_thread(self._unlink_all, orphans)
        if removed:
            log.info("old recording files without a row removed", files=removed)
        return removed

    def _old_files(self, before: float) -> list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                p = Path(dirpath) / f
                rel = p.relative_to(self.root).as_posix()
                if not is_recording_name(rel):
                    continue
                try:
                    if p.stat().st_mtime < before:
                        out.append(rel)
                except OSError:
                    continue
        return out

    def _unlink_all(self, names: list[str]) -> int:
        n = 0
        for name in names:
            try:
                (self.root / name).unlink()
                n += 1
            except OSError:
                continue
        return n

    def _prune(self) -> None:
        """Remove emptied day/month/year directories (not today's: MixMonitor may be about to write there)."""
        today = self.clock.now().astimezone(self.tz).strftime("%Y/%m/%d")
        for dirpath, _dirs, _files in os.walk(self.root, topdown=False):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == "." or not is_date_directory(rel) or today.startswith(rel):
                continue
            try:
                Path(dirpath).rmdir()  # only if empty (the walk's lists are from before their children went)
            except OSError:
                pass

    def _measure(self) -> DiskUsage:
        started = time.monotonic()
        usage = DiskUsage(directory=str(self.root), exists=self.root.is_dir())
        if not usage.exists:
            return usage
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                try:
                    usage.bytes += (Path(dirpath) / f).stat().st_size
                    usage.files += 1
                except OSError:
                    continue
        self._free(usage)
        usage.measured_at = self.clock.now().isoformat()
        usage.seconds_to_measure = round(time.monotonic() - started, 3)
        return usage

    def _free(self, usage: DiskUsage) -> None:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return
        usage.free_bytes = st.f_bavail * st.f_frsize
        usage.total_bytes = st.f_blocks * st.f_frsize
        usage.writable = not (st.f_flag & os.ST_RDONLY) and os.access(self.root, os.W_OK | os.X_OK)

    # ------------------------------------------------------------------ /health and /metrics

    def usage(self) -> DiskUsage | None:
        """The last measurement (retention pass), with the free space read now."""
        if self._usage is None:
            return None
        if self._usage.exists:
            self._free(self._usage)
        return self._usage

    async def health(self) -> dict[str, Any]:
        usage = await asyncio.to_thread(self.usage)
        if usage is None:
            usage = await asyncio.to_thread(self._measure)
            self._usage = usage
        low = usage.free_bytes is not None and usage.free_bytes < self.rc.min_free_mb * 1048576
        return {
            "enabled": self.rc.enabled,
            "ok": (not self.rc.enabled) or (usage.exists and usage.writable and not low),
            **asdict(usage),
            "min_free_bytes": int(self.rc.min_free_mb * 1048576),
            "retention_days": self.rc.retention_days,
            "recorded": dict(self.counts),
            "skipped": dict(self.skips),
            "deleted": self.deleted_total,
        }

    # ------------------------------------------------------------------ what the pages may see and play

    def _view(self, r: StoredRecording) -> dict[str, Any]:
        playable = r.status in (RecordingStatus.COMPLETE, RecordingStatus.SHORT) and r.deleted_at is None
        out: dict[str, Any] = {
            "id": r.id, "call_uniqueid": r.call_uniqueid, "offer_id": r.offer_id, "agent": r.agent_login,
            "started_at": _iso(r.started_at), "ended_at": _iso(r.ended_at), "talk_seconds": r.talk_seconds,
            "seconds": r.seconds, "bytes": r.bytes, "status": r.status.value, "reason": r.reason,
            "deleted_at": _iso(r.deleted_at), "playable": playable,
            "url": f"/api/recordings/{r.id}" if playable else None,
            "legs": [{"side": side, "url": f"/api/recordings/{r.id}?leg={side}"} for side in LEGS]
            if playable and r.separate_legs else [],
        }
        return out

    async def for_ticket(self, actor: UserView, number: str) -> dict[str, Any]:
        check_recordings(actor)
        found = await self.repo.for_ticket(number)
        if found is None:
            raise NotFound(f"ticket {number} does not exist", code="ticket_not_found")
        uniqueid, recs = found
        return {"ticket": number, "call_uniqueid": uniqueid, "recordings": [self._view(r) for r in recs]}

    async def for_call(self, actor: UserView, uniqueid: str) -> dict[str, Any]:
        check_recordings(actor)
        return {"call_uniqueid": uniqueid, "recordings": [self._view(r) for r in await self.repo.for_call(uniqueid)]}

    async def history(self, actor: UserView, day: date, phone: str | None) -> dict[str, Any]:
        """The calls of one local day (newest first) with their tickets and recordings."""
        check_recordings(actor)
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        rows = await self.repo.history(start, start + timedelta(days=1), phone=phone)
        return {"day": day.isoformat(), "phone": phone, "calls": [self._call(c) for c in rows]}

    def _call(self, c: CallHistoryRow) -> dict[str, Any]:
        return {"uniqueid": c.uniqueid, "caller_id": c.caller_id, "started_at": _iso(c.started_at),
                "ended_at": _iso(c.ended_at), "outcome": c.outcome, "ivr_path": c.ivr_path, "answered_by": c.answered_by,
                "tickets": list(c.tickets), "recordings": [self._view(r) for r in c.recordings]}

    def today(self) -> date:
        return self.clock.now().astimezone(self.tz).date()

    async def file(self, actor: UserView, recording_id: int, leg: str | None = None) -> RecordingFile:
        """The file of recording ``recording_id`` (or one of its legs), as the server finds it itself."""
        check_recordings(actor)
        rec = await self.repo.get(recording_id)
        if rec is None:
            raise RecordingNotFound(f"recording {recording_id} does not exist")
        if rec.deleted_at is not None or rec.status is RecordingStatus.DELETED:
            raise RecordingGone(f"recording {recording_id} was deleted on {rec.deleted_at:%Y-%m-%d}"
                                if rec.deleted_at else f"recording {recording_id} was deleted")
        if rec.status is RecordingStatus.MISSING or not is_recording_name(rec.path):
            raise RecordingGone(f"recording {recording_id} has no file: {rec.reason or 'not recorded'}")
        name = rec.path
        if leg is not None:
            if leg not in LEGS or not rec.separate_legs:
                raise RecordingNotFound(f"recording {recording_id} has no {leg!r} leg")
            name = leg_names(rec.path)[LEGS.index(leg)]
        path, size = await asyncio.to_thread(self._resolve, name)
        if path is None:
            raise RecordingGone(f"the file of recording {recording_id} is not in the recording directory")
        log.info("recording served", recording_id=recording_id, leg=leg, uniqueid=rec.call_uniqueid, to=actor.login)
        return RecordingFile(path=path, size=size, recording=rec, leg=leg)

    def _resolve(self, name: str) -> tuple[Path | None, int]:
        """root/name, resolved, still inside the root, a regular file (a symlink out of it is refused)."""
        root = self.root.resolve()
        try:
            path = (root / name).resolve(strict=True)
        except (OSError, RuntimeError):
            return None, 0
        if not path.is_relative_to(root) or not path.is_file():
            return None, 0
        return path, path.stat().st_size


def is_date_directory(rel: str) -> bool:
    """``YYYY``, ``YYYY/MM`` or ``YYYY/MM/DD``: the directories recording names make."""
    return bool(_DATE_DIR.match(rel))


def _base_name(name: str) -> str:
    for suffix in ("-caller.wav", "-agent.wav"):
        if name.endswith(suffix):
            return name.removesuffix(suffix) + ".wav"
    return name


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row_log(r: RecordingResult) -> dict[str, object]:
    """Enough to put the row back by hand if the database stayed down."""
    return {k: (v.value if isinstance(v, RecordingStatus) else v.isoformat() if isinstance(v, datetime) else v)
            for k, v in asdict(r).items()}


__all__ = ["DiskUsage", "RecordingFile", "RecordingGone", "RecordingNotFound", "RecordingService", "RetentionPass"]
