"""The one periodic-loop helper: wait, run a step, log a failed step with its traceback, go on."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from callcentre.tasks import cancel_and_wait, run_periodically


async def _until(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


class Steps:
    """A step that counts its runs, fails the first ``failing`` of them, and says when the third ran."""

    def __init__(self, failing: int = 0) -> None:
        self.runs = 0
        self.failing = failing
        self.third = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs == 3:
            self.third.set()
        if self.runs <= self.failing:
            raise RuntimeError(f"database hiccup {self.runs}")


async def test_a_failing_step_is_logged_with_its_traceback_and_the_loop_goes_on() -> None:
    step = Steps(failing=2)
    with capture_logs() as logs:
        task = asyncio.create_task(run_periodically("test-loop", step, 0))
        await _until(step.third)
        await cancel_and_wait(task)
    failures = [e for e in logs if e["event"] == "periodic step failed"]
    assert [e["task"] for e in failures] == ["test-loop", "test-loop"]
    assert all(e["log_level"] == "error" and e.get("exc_info") is True for e in failures)  # log.exception
    assert task.cancelled() and step.runs >= 3


async def test_the_interval_is_asked_after_every_step() -> None:
    step = Steps()
    asked: list[int] = []

    def interval() -> float:
        asked.append(step.runs)
        return 0.0

    task = asyncio.create_task(run_periodically("test-loop", step, interval))
    await _until(step.third)
    await cancel_and_wait(task)
    assert asked[:2] == [1, 2]


async def test_wake_ends_the_wait_and_wait_first_waits_before_the_first_step() -> None:
    wake = asyncio.Event()
    ran = asyncio.Event()
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        ran.set()

    task = asyncio.create_task(run_periodically("test-loop", step, 3600.0, wake=wake, wait_first=True))
    for _ in range(5):
        await asyncio.sleep(0)
    assert runs == 0  # still waiting: an hour, or until woken
    wake.set()
    await _until(ran)
    assert runs == 1
    ran.clear()
    for _ in range(5):
        await asyncio.sleep(0)
    assert runs == 1 and not wake.is_set()  # cleared after the step: the next wait is a real one
    wake.set()
    await _until(ran)
    assert runs == 2
    await cancel_and_wait(task)


async def test_a_wake_during_a_step_is_not_lost_and_min_gap_spaces_woken_steps() -> None:
    """The wallboard's push is nudged by agents' clicks while it may be building a picture: a nudge
    that comes during the step runs the next step at once (not an interval later); with ``min_gap``
    the next step still waits that long after the last."""
    wake = asyncio.Event()
    second = asyncio.Event()
    at: list[float] = []
    loop = asyncio.get_running_loop()

    async def step() -> None:
        at.append(loop.time())
        if len(at) == 1:
            wake.set()  # a change arrives while this step runs
        else:
            second.set()

    task = asyncio.create_task(run_periodically("test-loop", step, 3600.0, wake=wake, min_gap=0.05))
    await _until(second)  # an hour's interval: only the nudge during the first step can bring the second
    await cancel_and_wait(task)
    assert at[1] - at[0] >= 0.04  # asyncio may wake a sleep up to its clock resolution early


async def test_cancellation_ends_the_loop_even_inside_a_step() -> None:
    inside = asyncio.Event()

    async def step() -> None:
        inside.set()
        await asyncio.Event().wait()  # a step that never finishes by itself

    task = asyncio.create_task(run_periodically("test-loop", step, 0))
    await _until(inside)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
