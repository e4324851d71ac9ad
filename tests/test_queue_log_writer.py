"""callcentre/queue_log_writer.py: one line per event, in order, and nothing it meets reaches call handling."""

from __future__ import annotations

import errno
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import callcentre.queue_log_writer as writer_mod
from callcentre.domain import queue_log as ql
from callcentre.queue_log_writer import QueueLogWriter

AT = datetime(2026, 12, 6, 7, 37, 0, tzinfo=timezone.utc)


def entries(n: int) -> list[ql.QueueLogEntry]:
    return [ql.abandon(AT, f"1796542619.{i}", "hotline", position=1, original_position=1, wait_seconds=i)
            for i in range(n)]


def text(es: list[ql.QueueLogEntry]) -> str:
    return "".join(ql.format_line(e) for e in es)


async def test_lines_are_appended_in_order_one_per_event(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    path.write_text("1700000000|NONE|NONE|NONE|QUEUESTART|\n")  # app_queue's own lines stay
    w = QueueLogWriter(path)
    await w.start()
    es = entries(3)
    for e in es:
        w.write(e)
    await w.flush()
    assert path.read_text() == "1700000000|NONE|NONE|NONE|QUEUESTART|\n" + text(es)
    w.write(ql.pause(AT, "hotline", "Agent Q1", reason="lunch"))
    await w.close()
    assert path.read_text().endswith(f"{ql.epoch_of(AT)}|NONE|hotline|Agent Q1|PAUSE|lunch\n")
    s = w.stats()
    assert (s.written, s.failed, s.dropped, s.pending) == (4, 0, 0, 0)


async def test_a_full_disk_is_counted_and_logged_never_raised() -> None:
    # /dev/full answers every write with ENOSPC: the real error, no mock
    w = QueueLogWriter("/dev/full")
    await w.start()
    with capture_logs() as logs:
        for e in entries(2):
            w.write(e)  # must not raise
        await w.flush()
    await w.close()
    s = w.stats()
    assert (s.written, s.failed, s.dropped) == (0, 2, 0)
    assert s.last_error is not None and s.last_error.startswith("ENOSPC")
    failed = [entry for entry in logs if entry["event"] == "queue_log line not written"]
    assert [entry["uniqueid"] for entry in failed] == ["1796542619.0", "1796542619.1"]


async def test_a_line_cut_short_by_a_full_disk_does_not_swallow_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queue_log"
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes) -> int:
        # as write(2) does when the disk fills up during a line: a short write, then ENOSPC for the rest
        calls["n"] += 1
        if calls["n"] == 2:
            return real_write(fd, data[:5])
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(writer_mod.os, "write", flaky_write)
    w = QueueLogWriter(path)
    await w.start()
    es = entries(3)
    for e in es:
        w.write(e)
    await w.close()
    lines = ql.format_line(es[0]), ql.format_line(es[1]), ql.format_line(es[2])
    assert path.read_text() == lines[0] + lines[1][:5] + "\n" + lines[2]
    assert (w.stats().written, w.stats().failed) == (2, 1)


async def test_a_missing_directory_fails_lines_until_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "queue_log"
    w = QueueLogWriter(path)
    await w.start()
    es = entries(2)
    w.write(es[0])
    await w.flush()
    assert w.stats().failed == 1 and not path.exists()
    path.parent.mkdir()
    w.write(es[1])
    await w.close()
    assert path.read_text() == ql.format_line(es[1])
    assert (w.stats().written, w.stats().failed) == (1, 1)


async def test_a_rotated_file_is_followed_by_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    w = QueueLogWriter(path)
    await w.start()
    es = entries(2)
    w.write(es[0])
    await w.flush()
    path.rename(tmp_path / "queue_log.1")  # logrotate's move
    w.write(es[1])
    await w.close()
    assert (tmp_path / "queue_log.1").read_text() == ql.format_line(es[0])
    assert path.read_text() == ql.format_line(es[1])


async def test_too_many_waiting_lines_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "queue_log"
    w = QueueLogWriter(path, max_pending=2)
    es = entries(3)
    with capture_logs() as logs:
        for e in es:  # not started yet: nothing drains the queue
            w.write(e)
    assert w.stats().dropped == 1 and w.stats().pending == 2
    assert any(entry["event"].startswith("queue_log line dropped") and entry["uniqueid"] == "1796542619.2"
               for entry in logs)
    await w.start()
    await w.close()
    assert path.read_text() == text(es[:2])


async def test_after_close_lines_are_dropped_not_raised(tmp_path: Path) -> None:
    w = QueueLogWriter(tmp_path / "queue_log")
    await w.start()
    await w.close()
    w.write(entries(1)[0])
    assert w.stats().dropped == 1
    assert not (tmp_path / "queue_log").exists()


async def test_close_without_start_counts_what_was_never_written(tmp_path: Path) -> None:
    w = QueueLogWriter(tmp_path / "queue_log")
    w.write(entries(1)[0])
    await w.close()
    assert w.stats().dropped == 1


async def test_an_entry_that_cannot_be_formatted_is_dropped_not_raised(tmp_path: Path) -> None:
    w = QueueLogWriter(tmp_path / "queue_log")
    w.write(object())  # type: ignore[arg-type]
    assert w.stats().dropped == 1 and w.stats().pending == 0


async def test_start_twice_is_refused(tmp_path: Path) -> None:
    w = QueueLogWriter(tmp_path / "queue_log")
    await w.start()
    with pytest.raises(RuntimeError):
        await w.start()
    await w.close()


def test_max_pending_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        QueueLogWriter(tmp_path / "queue_log", max_pending=0)
