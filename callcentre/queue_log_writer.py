"""The queue_log file adapter: app_queue-compatible lines appended to a file for the reporting tools.

``write()`` is what call handling calls: it formats the line and queues it, and returns at once. It never
raises and never waits for the disk: one owned task hands the queued lines to a worker thread, which
appends each line with a single ``write(2)`` on an ``O_APPEND`` descriptor (no user-space buffer: every
line is in the kernel as soon as it is written, like app_queue's ``fflush`` per line).

What can go wrong stays here, logged with the call's uniqueid and counted (:meth:`QueueLogWriter.stats`):

* the disk is full or the directory unwritable: the line is lost and counted as ``failed``; the next line
  is tried again (a line cut short by a full disk is ended before the next one, so it cannot swallow it);
* the file was moved or deleted (logrotate): the next batch opens a new file at the path;
* more than ``max_pending`` lines wait (the disk is stalled): new lines are dropped and counted.

Asterisk's realtime ``queue_log`` table is the other target app_queue can write; its schema is described
in :mod:`callcentre.domain.queue_log` and not implemented here yet.
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from callcentre.domain.queue_log import QueueLogEntry, format_line
from callcentre.tasks import cancel_and_wait

__all__ = ["QueueLogStats", "QueueLogWriter"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QueueLogStats:
    written: int  # lines now in the file
    failed: int  # lines the file refused (disk full, no such directory, ...)
    dropped: int  # lines never tried: too many waiting, or written after close()
    pending: int  # lines waiting for the worker
    last_error: str | None
    failing: bool = False  # the latest line tried was refused (the file is failing now, not only once)


class QueueLogWriter:
    """Appends :class:`~callcentre.domain.queue_log.QueueLogEntry` lines to ``path``.

    Use: ``await writer.start()``; ``writer.write(entry)`` from anywhere in the event loop;
    ``await writer.close()`` at shutdown (writes what is queued, within ``close_timeout`` seconds).
    """

    def __init__(self, path: Path | str, *, max_pending: int = 10_000, mode: int = 0o640) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.path = Path(path)
        self._mode = mode
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fd: int | None = None
        self._partial = False  # the last line was cut short (ENOSPC after some bytes)
        self._written = 0
        self._failed = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._failing = False

    # ------------------------------------------------------------------ the loop side

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("queue_log writer already started")
        self._task = asyncio.create_task(self._run(), name="queue-log-writer")

    def write(self, entry: QueueLogEntry) -> None:
        """Queue one line; returns at once and never raises."""
        try:
            line = format_line(entry).encode("utf-8")
        except Exception as exc:  # noqa: BLE001 - a bad entry must not reach call handling
            self._dropped += 1
            log.error("queue_log entry not formatted", uniqueid=getattr(entry, "callid", None), error=repr(exc))
            return
        if self._closing:
            self._dropped += 1
            log.warning("queue_log line after close dropped", uniqueid=entry.callid, queue_event=entry.event.value)
            return
        try:
            self._queue.put_nowait((entry.callid, line))
        except asyncio.QueueFull:
            self._dropped += 1
            log.error("queue_log line dropped: too many lines waiting for the disk", uniqueid=entry.callid,
                      queue_event=entry.event.value, pending=self._queue.qsize(), dropped=self._dropped)

    async def flush(self) -> None:
        """Wait until every line queued so far was written (or failed)."""
        await self._queue.join()

    async def close(self, close_timeout: float = 5.0) -> None:
        """Write what is queued (at most ``close_timeout`` s), then stop the task and close the file."""
        self._closing = True
        if self._task is None:
            self._dropped += self._queue.qsize()  # never started: nothing will write them
        else:
            try:
                await asyncio.wait_for(self._queue.join(), close_timeout)
            except TimeoutError:
                left = self._queue.qsize()
                self._dropped += left
                log.error("queue_log lines not written at shutdown", lost=left, path=str(self.path))
            await cancel_and_wait(self._task)
            self._task = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stats(self) -> QueueLogStats:
        return QueueLogStats(self._written, self._failed, self._dropped, self._queue.qsize(), self._last_error,
                             self._failing)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self._write_batch, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    # ------------------------------------------------------------------ the worker thread side

    def _write_batch(self, batch: list[tuple[str, bytes]]) -> None:
        try:
            fd = self._open()
        except OSError as exc:
            for uniqueid, _line in batch:
                self._fail(uniqueid, exc)
            return
        for uniqueid, line in batch:
            data = b"\n" + line if self._partial else line
            done = 0
            try:
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError as exc:
                if done > 0:
                    self._partial = True
                self._fail(uniqueid, exc)
                continue
            self._partial = False
            self._written += 1
            self._failing = False

    def _open(self) -> int:
        """The descriptor for ``path``, opened again when the file there is not the one we hold."""
        if self._fd is not None:
            try:
                on_disk = os.stat(self.path)
                held = os.fstat(self._fd)
                if (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino):
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
            self._partial = False  # a new file starts clean
            log.info("queue_log file reopened", path=str(self.path))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self._mode)
        return self._fd

    def _fail(self, uniqueid: str, exc: OSError) -> None:
        self._failed += 1
        self._failing = True
        reason = errno.errorcode.get(exc.errno or 0, "?")
        self._last_error = f"{reason}: {exc.strerror or exc}"
        log.error("queue_log line not written", uniqueid=uniqueid, path=str(self.path), error=self._last_error,
                  failed=self._failed)
