"""The AMI link: one supervised connection to Asterisk's manager interface.

How panoramisk is used, and why: we keep panoramisk 1.4 as the AMI library for its message type and
parser (:class:`panoramisk.message.Message`, via :func:`callcentre.ami.protocol.parse_message`),
but run our own connection loop instead of its ``Manager``. The Manager cannot be made safe by
configuration alone: on reconnect it re-sends actions that were in flight when ``FullyBooted``
arrives (an Originate could ring a customer twice); its pinger never checks the reply, so a
half-open TCP link goes unnoticed; it reconnects with a fixed delay and retries a bad login forever
at that pace; it schedules reconnects and event callbacks fire-and-forget (``call_later``,
``ensure_future``); and it writes values as given. Our loop owns one supervisor task per link, which
owns the reader and the ping watchdog of each session; every action is sanitised before a byte is
written, and an action in flight when the link drops fails with :class:`AMIDisconnected` and is
forgotten.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import structlog
from panoramisk.message import Message

from callcentre.ami.protocol import (
    BANNER_PREFIX,
    AMIValueRejected,
    ActionValue,
    encode_action,
    event_name,
    field as get_field,
    parse_message,
    sanitise_action,
)
from callcentre.config import AMIConfig
from callcentre.domain.ports import Clock, SystemClock

log = structlog.get_logger(__name__)

# One AMI message larger than this is treated as a broken stream (Asterisk's largest are a few KiB).
MESSAGE_MAX_BYTES = 1024 * 1024
_TERMINATOR = b"\r\n\r\n"
_TEXT_TERMINATOR = "\r\n\r\n"
# How much is taken from the socket's buffer at a time (at most MESSAGE_MAX_BYTES: see _read_messages):
# about 150 events, a millisecond or two of work, after which other tasks get their turn.
_READ_BYTES = 64 * 1024


class AMIError(Exception):
    """Base of every error the AMI link raises."""


class AMIDisconnected(AMIError):
    """The link is down, or dropped while the action was in flight; the action was NOT re-sent."""


class AMITimeout(AMIError):
    """No reply within the timeout. The action may or may not have run: do not blindly retry."""


class AMIActionError(AMIError):
    """Asterisk answered ``Response: Error`` (or ``Failure``)."""

    def __init__(self, message: Mapping[str, Any]) -> None:
        self.response = message
        self.reason = get_field(message, "Message") or get_field(message, "Response") or "error"
        super().__init__(self.reason)


class AMILoginFailed(AMIError):
    """Asterisk refused our credentials."""


class LinkState(Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    LOGGING_IN = "logging_in"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"


EventCallback = Callable[[Message], None]
LoginCallback = Callable[[], Awaitable[None]]


@dataclass
class _Pending:
    """An action waiting for its reply; ``events`` collects an event list (EventList: start)."""

    name: str
    future: asyncio.Future[Any]
    collecting: bool = False
    events: list[Message] = field(default_factory=list)


class _SessionEnded(Exception):
    """Internal: the current TCP session is over (EOF, Shutdown, half-open, broken stream)."""


class AMILink:
    """A resilient AMI client: login, ping watchdog, reconnect with backoff, safe actions."""

    def __init__(
        self,
        config: AMIConfig,
        secret: str | None,
        *,
        on_event: EventCallback,
        on_login: LoginCallback,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = config
        self._secret = secret or ""
        self._on_event = on_event
        self._on_login = on_login
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._state = LinkState.STOPPED
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._session_no = 0
        self._since: str | None = None
        self._last_error: str | None = None
        self._reconnects = 0
        self._login_failures = 0
        self._connect_failures = 0
        self._malformed = 0
        self._stopping = False
        self._session_logged_in = False

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the supervisor; returns at once (the link connects in the background)."""
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name="ami-link")

    async def stop(self) -> None:
        """Close the link; actions in flight fail with AMIDisconnected."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._state = LinkState.STOPPED

    @property
    def connected(self) -> bool:
        return self._state is LinkState.CONNECTED

    @property
    def state(self) -> LinkState:
        return self._state

    def status(self) -> dict[str, object]:
        """For the health check."""
        return {
            "connected": self.connected,
            "state": self._state.value,
            "since": self._since,
            "last_error": self._last_error,
            "reconnects": self._reconnects,
            "login_failures": self._login_failures,
            "malformed_messages": self._malformed,
        }

    # ---- actions ---------------------------------------------------------------------------
    def new_action_id(self) -> str:
        """An ActionID unique within this link (callers may reserve one before sending)."""
        return f"cc-{next(self._ids)}"

    # The timeout also removes the pending entry, so it is a parameter rather than asyncio.timeout.
    async def send(self, action: Mapping[str, ActionValue], timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send one action; return its response Message, or the list of events of an event list
        (the last one is the ``…Complete`` event).

        Raises AMIValueRejected before anything is written, AMIActionError on ``Response: Error``,
        AMIDisconnected when not connected or when the link drops in flight (never re-sent),
        AMITimeout when no reply comes within ``timeout`` (default ami.action_timeout_seconds).
        """
        clean = sanitise_action(action, self._cfg.value_max_length)
        if not self.connected:
            raise AMIDisconnected("AMI link is not connected")
        return await self._request(clean, timeout)

    async def originate(
        self,
        *,
        channel: str,
        context: str,
        exten: str,
        priority: int = 1,
        caller_id: str | None = None,
        timeout_ms: int | None = None,
        variables: Mapping[str, str] | None = None,
        action_id: str | None = None,
    ) -> str:
        """Queue an Originate (Async: true) and return its ActionID.

        The immediate ``Response: Success`` only means "queued"; the outcome is the
        ``OriginateResponse`` event with this ActionID (Reason 4 answered, 3 no answer, 5 busy,
        0 failed). Pass ``action_id`` (from :meth:`new_action_id`) to register interest before the
        event can arrive. Never retried: on AMIDisconnected/AMITimeout the caller decides.
        """
        action: dict[str, ActionValue] = {
            "Action": "Originate",
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": str(priority),
            "Async": "true",
        }
        if caller_id is not None:
            action["CallerID"] = caller_id
        if timeout_ms is not None:
            action["Timeout"] = str(int(timeout_ms))
        if variables:
            action["Variable"] = [_variable(k, v) for k, v in variables.items()]
        aid = action_id or self.new_action_id()
        action["ActionID"] = aid
        await self._send_with_id(action)
        return aid

    async def hangup(self, channel: str, cause: int | None = None) -> None:
        action: dict[str, ActionValue] = {"Action": "Hangup", "Channel": _required("Channel", channel)}
        if cause is not None:
            action["Cause"] = str(int(cause))
        await self.send(action)

    async def redirect(
        self,
        channel: str,
        context: str,
        exten: str,
        priority: int = 1,
        extra_channel: str | None = None,
    ) -> None:
        action: dict[str, ActionValue] = {
            "Action": "Redirect",
            "Channel": _required("Channel", channel),
            "Context": _required("Context", context),
            "Exten": _required("Exten", exten),
            "Priority": str(int(priority)),
        }
        if extra_channel:
            action.update(
                {"ExtraChannel": extra_channel, "ExtraContext": context, "ExtraExten": exten, "ExtraPriority": str(int(priority))}
            )
        await self.send(action)

    async def queue_pause(self, queue: str | None, interface: str, paused: bool, reason: str | None = None) -> None:
        """Pause or unpause a queue member (``queue`` None: in every queue)."""
        action: dict[str, ActionValue] = {
            "Action": "QueuePause",
            "Interface": _required("Interface", interface),
            "Paused": "true" if paused else "false",
        }
        if queue:
            action["Queue"] = queue
        if reason:
            action["Reason"] = reason
        await self.send(action)

    async def ping(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        return await self.send({"Action": "Ping"}, timeout=timeout)

    async def core_show_channels(self) -> list[Message]:
        """Every live channel (CoreShowChannel events; the last is CoreShowChannelsComplete)."""
        return await self.send({"Action": "CoreShowChannels"})

    async def queue_status(self, queue: str | None = None) -> list[Message]:
        action: dict[str, ActionValue] = {"Action": "QueueStatus"}
        if queue:
            action["Queue"] = queue
        return await self.send(action)

    async def channel_status(self) -> list[Message]:
        """The ``Status`` action (named so it does not clash with :meth:`status`)."""
        return await self.send({"Action": "Status"})

    # ---- internals: requests ---------------------------------------------------------------
    async def _send_with_id(self, action: Mapping[str, ActionValue]) -> Any:
        clean = sanitise_action(action, self._cfg.value_max_length)
        if not self.connected:
            raise AMIDisconnected("AMI link is not connected")
        return await self._request(clean, None)

    async def _request(self, action: dict[str, ActionValue], wait: float | None) -> Any:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise AMIDisconnected("AMI link is not connected")
        id_key = next((k for k in action if k.lower() == "actionid"), None)
        if id_key is None:
            action_id = self.new_action_id()
            action["ActionID"] = action_id
        else:
            action_id = str(action[id_key])
            if action_id in self._pending:
                raise AMIValueRejected(f"ActionID {action_id!r} is already in flight")
        name = str(next(v for k, v in action.items() if k.lower() == "action"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(name=name, future=future)
        limit = self._cfg.action_timeout_seconds if wait is None else wait
        try:
            async with asyncio.timeout(limit):
                writer.write(encode_action(action))
                await writer.drain()
                return await future
        except TimeoutError:
            raise AMITimeout(f"no reply to {name} within {limit:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise AMIDisconnected(f"AMI link dropped while sending {name}: {exc}") from exc
        finally:
            self._pending.pop(action_id, None)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(AMIDisconnected(f"{reason}; {entry.name} was not re-sent"))

    # ---- internals: connection loop --------------------------------------------------------
    async def _supervise(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                self._state = LinkState.CONNECTING
                try:
                    await self._session()
                except AMILoginFailed as exc:
                    self._note_login_failure(str(exc))
                except (OSError, asyncio.IncompleteReadError, _SessionEnded, TimeoutError, AMIError) as exc:
                    self._note_drop(exc)
                except Exception as exc:  # a bug must not end the link for good: log it and reconnect
                    log.exception("ami session failed unexpectedly")
                    self._note_drop(exc)
                finally:
                    await self._close_writer()
                    self._fail_pending("AMI link dropped")
                    if self._state is LinkState.CONNECTED:
                        self._since = None
                if self._session_logged_in:
                    attempt = 0
                    self._reconnects += 1
                delay = self._backoff(attempt)
                attempt += 1
                self._state = LinkState.BACKING_OFF
                log.debug("ami reconnect scheduled", delay_seconds=round(delay, 3))
                await asyncio.sleep(delay)
        finally:
            await self._close_writer()
            self._fail_pending("AMI link stopped")
            self._state = LinkState.STOPPED

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter; after repeated login failures, the maximum."""
        lo, hi = self._cfg.reconnect_min_seconds, self._cfg.reconnect_max_seconds
        if self._login_failures >= self._cfg.login_failures_before_backoff:
            base = max(hi, self._cfg.login_retry_seconds)
        else:
            base = min(hi, lo * (2 ** min(attempt, 30)))
        # Jitter in [base/2, base], never below the configured minimum.
        return max(min(lo, hi), base * (0.5 + 0.5 * self._rng.random()))

    def _note_login_failure(self, reason: str) -> None:
        self._login_failures += 1
        self._last_error = f"login failed: {reason}"
        if self._login_failures == 1:
            log.error(
                "ami login failed",
                reason=reason,
                username=self._cfg.username,
                hint="check ami.username and the AMI secret (CALLCENTRE_AMI_SECRET / ami.secret_file)",
            )
        elif self._login_failures == self._cfg.login_failures_before_backoff:
            log.warning(
                "ami login still failing; retrying slowly",
                failures=self._login_failures,
                retry_seconds=max(self._cfg.reconnect_max_seconds, self._cfg.login_retry_seconds),
            )
        else:
            log.debug("ami login failed again", failures=self._login_failures)

    def _note_drop(self, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        self._last_error = text
        if self._state is LinkState.CONNECTED:
            log.warning("ami link lost", reason=text)
            self._connect_failures = 0
        else:
            self._connect_failures += 1
            if self._connect_failures == 1:
                log.warning("ami connect failed", reason=text, host=self._cfg.host, port=self._cfg.port)
            else:
                log.debug("ami connect failed again", reason=text, failures=self._connect_failures)

    async def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()  # a half-open peer never acknowledges: drop the unsent bytes
        except OSError:
            pass  # already broken; the transport is closed either way

    async def _session(self) -> None:
        """One TCP session: banner, login, resync hook, then read until it ends (always raises)."""
        cfg = self._cfg
        self._session_no += 1
        self._session_logged_in = False
        async with asyncio.timeout(cfg.connect_timeout_seconds):
            reader, writer = await asyncio.open_connection(cfg.host, cfg.port, limit=MESSAGE_MAX_BYTES)
        self._writer = writer
        async with asyncio.timeout(cfg.connect_timeout_seconds):
            banner = (await reader.readline()).decode("utf-8", "replace")
        if not banner.startswith(BANNER_PREFIX):
            raise _SessionEnded(f"not an AMI server (banner {banner[:60]!r})")
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._read_loop(reader), name="ami-reader")]
        try:
            self._state = LinkState.LOGGING_IN
            await self._login()
            self._session_logged_in = True
            self._state = LinkState.CONNECTED
            self._since = self._clock.now().isoformat()
            self._login_failures = 0
            self._connect_failures = 0
            self._last_error = None
            log.info("ami link up", host=cfg.host, port=cfg.port, version=banner.strip()[len(BANNER_PREFIX) :])
            watched = [tasks[0], asyncio.create_task(self._ping_watchdog(), name="ami-ping")]
            # The resync hook runs beside the watchdog: a link that dies during it is still noticed.
            tasks += [watched[1], asyncio.create_task(self._run_login_hook(), name="ami-on-login")]
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the reason the session ended
            raise _SessionEnded("AMI session ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _login(self) -> None:
        login: dict[str, ActionValue] = {
            "Action": "Login",
            "Username": self._cfg.username,
            "Secret": self._secret,
        }
        try:
            clean = sanitise_action(login, self._cfg.value_max_length)
        except AMIValueRejected as exc:
            raise AMILoginFailed(f"credentials cannot be sent: {exc}") from None
        clean["ActionID"] = f"login-{self._session_no}"
        try:
            await self._request(clean, None)
        except AMIActionError as exc:
            raise AMILoginFailed(exc.reason) from None
        except AMIDisconnected:
            raise _SessionEnded("Asterisk closed the connection during login") from None

    async def _run_login_hook(self) -> None:
        try:
            await self._on_login()
        except AMIError as exc:
            log.warning("ami resync after login failed", reason=str(exc))
        except Exception:
            log.exception("ami on_login hook raised")

    async def _ping_watchdog(self) -> None:
        """Ping every interval; after ``missed_pings`` unanswered in a row the link is half-open."""
        interval = self._cfg.ping_interval_seconds
        missed = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._request({"Action": "Ping"}, interval)
                missed = 0
            except AMITimeout:
                missed += 1
                log.debug("ami ping unanswered", missed=missed)
                if missed >= self._cfg.missed_pings:
                    log.warning("ami link half-open: pings unanswered", missed=missed)
                    raise _SessionEnded(f"{missed} pings unanswered (half-open link)") from None
            except AMIActionError:
                missed = 0  # an error reply still proves the link is alive
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            await self._read_messages(reader)
        finally:
            # Fail what is in flight at once rather than at its timeout; nothing is re-sent.
            self._fail_pending("AMI link dropped")

    async def _read_messages(self, reader: asyncio.StreamReader) -> None:
        """Read what has arrived (up to ``_READ_BYTES`` at a time), split it into messages and
        dispatch them; an incomplete last message waits for the next read. One decode and one split
        per read instead of one ``readuntil`` per message (many thousands a second under load).

        A read of buffered data does not suspend, so after each batch the loop yields once: a burst
        of events (a resync, a busy PBX) never holds up FastAGI sessions for longer than one batch."""
        pending = b""
        while True:
            chunk = await reader.read(_READ_BYTES)
            if not chunk:
                raise _SessionEnded("Asterisk closed the connection")
            data = pending + chunk if pending else chunk
            end = data.rfind(_TERMINATOR)
            if end < 0:
                pending = data
                if len(pending) > MESSAGE_MAX_BYTES:
                    raise _SessionEnded(f"AMI message over {MESSAGE_MAX_BYTES} bytes")
                continue
            pending = data[end + len(_TERMINATOR):]
            # Only the first message can have started in an earlier read (and so be longer than one).
            first = data.find(_TERMINATOR)
            if first > MESSAGE_MAX_BYTES or len(pending) > MESSAGE_MAX_BYTES:
                raise _SessionEnded(f"AMI message over {MESSAGE_MAX_BYTES} bytes")
            for block in data[:end].decode("utf-8", "replace").split(_TEXT_TERMINATOR):
                message = parse_message(block)
                if message is None:
                    self._malformed += 1
                    log.debug("ami malformed message ignored", size=len(block))
                    continue
                if self._dispatch(message):
                    raise _SessionEnded("Asterisk is shutting down")
            await asyncio.sleep(0)

    def _dispatch(self, message: Message) -> bool:
        """Route one message; True when it ends the session (Event: Shutdown)."""
        action_id = get_field(message, "ActionID")
        entry = self._pending.get(action_id) if action_id else None
        name = event_name(message)
        if entry is not None and not entry.future.done():
            if not name:
                self._complete_response(entry, message)
                return False
            if entry.collecting:
                entry.events.append(message)
                if get_field(message, "EventList").lower() == "complete" or name.endswith("Complete"):
                    entry.future.set_result(entry.events)
                return False
        if not name:
            log.debug("ami reply without a waiting action dropped", action_id=action_id)
            return False
        try:
            self._on_event(message)
        except Exception:
            log.exception("ami on_event callback raised", ami_event=name)
        if name == "Shutdown":
            log.warning("asterisk is shutting down", restart=get_field(message, "Restart"))
            return True
        return False

    def _complete_response(self, entry: _Pending, message: Message) -> None:
        response = get_field(message, "Response").lower()
        if response in ("error", "failure", "fail"):
            entry.future.set_exception(AMIActionError(message))
        elif get_field(message, "EventList").lower() == "start" or "will follow" in get_field(message, "Message").lower():
            entry.collecting = True
        else:
            entry.future.set_result(message)


def _required(key: str, value: str) -> str:
    if not value:
        raise AMIValueRejected(f"{key} is required")
    return value


def _variable(name: str, value: str) -> str:
    """One ``Variable: NAME=value`` line. Asterisk splits these on commas, so a comma is refused."""
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise AMIValueRejected(f"variable name {name!r} must be letters, digits and '_'")
    if not isinstance(value, str):
        raise AMIValueRejected(f"variable {name}: value must be text")
    if "," in value:
        raise AMIValueRejected(f"variable {name}: commas are not allowed (Asterisk splits on them)")
    return f"{name}={value}"
