"""Where the AMI link's events and log-ins go.

The link is built first, with :meth:`AMIEvents.dispatch` and :meth:`AMIEvents.logged_in` as its
callbacks, so the parts that send AMI actions (call-backs, call distribution) get the link in their
constructors; they then subscribe to its events. Handlers run in subscription order, on the link's
reader: each must be quick and must not block.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol

import structlog

from callcentre.ami.calls import CallRecord, CallTracker
from callcentre.ami.link import AMIError
from callcentre.ami.protocol import event_name
from callcentre.domain.ports import Clock

log = structlog.get_logger(__name__)

EventHandler = Callable[[Mapping[str, Any]], None]
LoginHandler = Callable[[], Awaitable[None]]


class AMIEvents:
    def __init__(self) -> None:
        self._handlers: list[EventHandler] = []
        self._login_handlers: list[LoginHandler] = []

    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    def on_login(self, handler: LoginHandler) -> None:
        self._login_handlers.append(handler)

    def dispatch(self, message: Mapping[str, Any]) -> None:
        for handler in self._handlers:
            handler(message)

    async def logged_in(self) -> None:
        for handler in self._login_handlers:
            await handler()


class ResyncLink(Protocol):
    """The AMI actions a resynchronisation reads."""

    async def core_show_channels(self) -> list[Any]: ...

    async def queue_status(self, queue: str | None = None) -> list[Any]: ...

    async def channel_status(self) -> list[Any]: ...


class Resync:
    """Resynchronise on every login: Asterisk may have restarted and forgotten every call.

    CoreShowChannels rebuilds the call records (phantoms are closed, unknown channels added);
    QueueStatus and Status are read for the fallback queue and the channels' details. Each is
    best effort: a PBX without app_queue answers QueueStatus with an error, which is logged. Then
    ``after`` (call distribution, when it runs) is given the calls that are open.
    """

    def __init__(self, ami: ResyncLink, tracker: CallTracker, clock: Clock, fallback_queue: str,
                 after: Callable[[list[CallRecord]], None]) -> None:
        self._ami = ami
        self._tracker = tracker
        self._clock = clock
        self._queue = fallback_queue
        self._after = after

    async def __call__(self) -> None:
        ami = self._ami
        channels = await ami.core_show_channels()
        self._tracker.resync(channels, self._clock.monotonic())
        summary = {"channels": sum(1 for m in channels if m.get("Event") == "CoreShowChannel")}
        # Counted by event name: a real QueueStatus answers QueueParams and a QueueMember per member
        # before any QueueEntry (a caller waiting), so "all events but the Complete" counted the members.
        steps = (("queue_entries", "QueueEntry", lambda: ami.queue_status(self._queue)),
                 ("status", "Status", ami.channel_status))
        for name, event, action in steps:  # each coroutine made only when its turn comes (a cancel leaves none behind)
            try:
                events = await action()
                summary[name] = sum(1 for m in events if event_name(m) == event)
            except AMIError as exc:
                log.warning("ami resync step failed", step=name, error=str(exc))
        self._after(self._tracker.open_calls())
        log.info("ami resynchronised", **summary)


__all__ = ["AMIEvents", "EventHandler", "LoginHandler", "Resync", "ResyncLink"]
