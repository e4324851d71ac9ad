"""One FastAGI connection as the domain's :class:`~callcentre.domain.ports.Channel`.

The connection (:mod:`callcentre.agi.transport`) hands every line to the channel as it arrives, in
the event loop's own callback: no task reads the socket. Replies are matched to commands strictly in order
(a FIFO of waiters: Asterisk answers every command it reads, even on a dead channel). The
unsolicited ``HANGUP`` line may come at any moment, also between a command and its reply
(agi-sip-call.txt), so it is never taken as a reply.

**One command on the wire at a time.** A command is written only once the reply to the previous
one has arrived (or the connection has ended), also after a hang-up. res_agi reads commands with a
buffered ``fgets`` but waits for them with ``poll`` on the socket: a second line written before the
first is answered is pulled into its stdio buffer with the first, and then sits there unread while
res_agi polls an empty socket, until we close. (On the real PBX, hanging up during STREAM FILE gives
``200 result=-1`` then ``HANGUP``; our CHANNEL STATUS sent in between was still owed its reply when the
handler, told of the hang-up, wrote ``SET VARIABLE CC_RESULT done``, which then waited out the reply
timeout.) So a command whose wait was cut short by the hang-up leaves its waiter in the FIFO, and the
next command first waits (at most ``command_timeout``) for that late reply, which is read and dropped.

How the handler learns of a hang-up, exactly once and at once:

* if it is waiting on a command, that command raises :class:`CallerHungUp` (the late reply is
  still awaited by the channel, as above, before anything else is written);
* if it is idle (database work, waiting for an agent), its task is cancelled at once;
* if the reply had already arrived when ``HANGUP`` came, the method returns its result and the
  task is cancelled at its next ``await`` (so nothing already received is lost).

Its ``finally`` then runs once; wrap commits in :meth:`AGIChannel.shielded` (or ``asyncio.shield``
on a task you own) so a cancellation does not cut them in half. After the hang-up only
``GET VARIABLE``, ``GET FULL VARIABLE`` and ``SET VARIABLE`` are sent (``allow_dead=True``), as
Asterisk still runs those; everything else raises CallerHungUp without touching the socket.
A reply that never comes (to the command sent or to one still owed) is a genuine fault: it is
logged at ERROR and the connection closed, so the dialplan falls back.
"""

from __future__ import annotations

import asyncio
import enum
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import structlog

from callcentre.agi.protocol import AGIEnv, AGIProtocolError, AGIReply, ReplyAssembler, build_command
from callcentre.agi.transport import AGIConnection, LineTooLong
from callcentre.domain.ports import CallerHungUp, ChannelError, DigitsResult, RecordResult

T = TypeVar("T")

_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(?:\([A-Za-z0-9_,.\-]*\))?$")
_PROMPT = re.compile(r"^[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-.]+)*$")
_PROMPT_PATH = re.compile(r"^/?[A-Za-z0-9_\-.]+(?:/[A-Za-z0-9_\-.]+)*/?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_DIGITS = re.compile(r"^[0-9*#]*$")
ALL_DIGITS = "0123456789*#"
# Extra time for the beep RECORD FILE plays before recording.
_RECORD_BEEP_SECONDS = 5.0
# CHANNEL STATUS states (res_agi returns ast_channel_state); 6 is Up.
_STATE_UP = 6

# Commands Asterisk still runs on a dead channel (and that cleanup code needs).
DEAD_OK_VERBS = frozenset({"GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE"})


class ChannelState(enum.Enum):
    OPEN = "open"  # caller on the line
    HUNG_UP = "hung_up"  # HANGUP received; the socket still answers dead-channel commands
    CLOSED = "closed"  # socket gone (EOF, protocol error, reply timeout, session over)


@dataclass(slots=True)
class _Waiter:
    command: str
    future: asyncio.Future[AGIReply]


class _ReplyTimeout(Exception):
    """Internal: a command's reply did not come within its time."""


def _expire(future: asyncio.Future[AGIReply]) -> None:
    if not future.done():
        future.set_exception(_ReplyTimeout())


class _Operation:
    """Marks the handler as inside a channel method, for the hang-up rule (see the module docstring)."""

    __slots__ = ("_channel", "_task", "_ok")

    def __init__(self, channel: "AGIChannel") -> None:
        self._channel = channel
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        ch = self._channel
        task = asyncio.current_task()
        if task is not None and task is ch._handler_task:
            self._task = task
            ch._op_depth += 1

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        task = self._task
        if task is None:
            return
        ch = self._channel
        ch._op_depth -= 1
        if ch._op_depth == 0 and ch._cancel_deferred:
            ch._cancel_deferred = False
            if exc_type is None:
                task.cancel("caller hung up")


def _check_variable(name: str) -> str:
    if not _VARIABLE.match(name):
        raise ValueError(f"not a safe channel variable name: {name!r}")
    return name


class AGIChannel:
    """A caller's channel over one FastAGI connection (see the module docstring for hang-ups)."""

    def __init__(
        self,
        connection: AGIConnection,
        env: AGIEnv,
        *,
        prompt_path: str = "",
        command_timeout: float = 10.0,
        prompt_max_seconds: float = 120.0,
    ) -> None:
        if prompt_path and not _PROMPT_PATH.match(prompt_path):
            raise ValueError(f"unsafe prompt path {prompt_path!r}")
        self._conn = connection
        self.env_info = env
        self.uniqueid = env.uniqueid
        self.linkedid: str | None = env.raw.get("agi_linkedid") or None
        self.channel_name = env.channel
        self.caller_id = env.callerid
        self.caller_name = env.calleridname
        self.language = env.language
        self.env: Mapping[str, str] = env.raw
        self.args: Sequence[str] = env.args
        self._prompt_path = prompt_path.rstrip("/")
        self._command_timeout = command_timeout
        self._prompt_max = prompt_max_seconds
        self._state = ChannelState.OPEN
        self._closed_error: Exception | None = None
        self._waiters: list[_Waiter] = []
        # Resolved when no reply is owed any more (made only while one is; see the module docstring).
        self._quiet: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._assembler = ReplyAssembler()
        self._handler_task: asyncio.Task[None] | None = None
        self._shielded: set[asyncio.Task[Any]] = set()
        self._op_depth = 0
        self._hangup_signalled = False
        self._cancel_deferred = False
        self.log = structlog.get_logger(__name__).bind(
            uniqueid=env.uniqueid, channel=env.channel, caller=env.callerid
        )

    # ------------------------------------------------------------------ state

    @property
    def hung_up(self) -> bool:
        return self._state is not ChannelState.OPEN

    @property
    def state(self) -> ChannelState:
        return self._state

    # ------------------------------------------------------------------ session

    async def run(self, handler: Callable[["AGIChannel"], Awaitable[None]]) -> None:
        """Run one handler over this connection; returns when it is done and everything is closed.

        Cancelling ``run`` cancels the handler (its ``finally`` still runs) and awaits it.
        """
        self._handler_task = asyncio.create_task(self._run_handler(handler), name=f"agi-handler-{self.uniqueid}")
        # Lines reach us from now on, a hang-up already received among them (the handler is then
        # cancelled before it starts, as it was when a reader task read the buffered line first).
        self._conn.attach(self)
        try:
            await asyncio.wait({self._handler_task})
        finally:
            await self._teardown()

    async def _run_handler(self, handler: Callable[["AGIChannel"], Awaitable[None]]) -> None:
        try:
            await handler(self)
        except CallerHungUp:
            self.log.info("caller hung up")
        except ChannelError as exc:
            self.log.warning("agi session ended by a channel error", error=str(exc))
        except asyncio.CancelledError:
            self.log.info("agi handler stopped", reason="caller hung up" if self.hung_up else "server stopping")
            raise
        except Exception:
            self.log.exception("agi handler failed")
        else:
            self.log.debug("agi handler finished")

    async def _teardown(self) -> None:
        handler = self._handler_task
        if handler is not None and not handler.done():
            handler.cancel("session closing")
            await asyncio.wait({handler})
        while self._shielded:
            # Commits run to their end (they have their own timeouts); nothing is cut in half.
            await asyncio.wait(set(self._shielded))
        self._close("session over", None)
        self._conn.detach()
        # A finished task keeps its exception (the CancelledError), whose traceback holds our frames,
        # which hold us: a reference cycle that kept every ended session (socket, buffers, env) alive
        # until a full garbage collection, and grew the heap under steady traffic (bench/soak.py).
        self._handler_task = None

    def shielded(self, aw: Awaitable[T]) -> Awaitable[T]:
        """Run ``aw`` to its end even if the handler is cancelled meanwhile (a hang-up); the
        cancellation is re-raised once it has finished. Use it for ticket commits."""
        task = asyncio.ensure_future(aw)
        self._shielded.add(task)
        task.add_done_callback(self._shielded.discard)
        return self._await_shielded(task)

    async def _await_shielded(self, task: asyncio.Future[T]) -> T:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    continue
                except Exception:  # noqa: S110 - its outcome is logged below; we are cancelled anyway
                    pass
            if not task.cancelled() and task.exception() is not None:
                self.log.warning("shielded work failed during cancellation", error=str(task.exception()))
            raise

    # ------------------------------------------------------------------ lines (from the connection)

    def on_line(self, raw: bytes) -> bool:
        """One line from Asterisk; False when it ended the connection (it is closed then)."""
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "HANGUP" and not self._assembler.in_block:
            self.log.info("agi hangup received")
            self._on_hangup()
            return True
        try:
            reply = self._assembler.feed(line)
        except AGIProtocolError as exc:
            reason = f"protocol error: {exc}"
            self.log.warning("agi protocol error; closing", error=str(exc))
            self._close(reason, ChannelError(reason))
            return False
        if reply is not None and not self._deliver(reply):
            reason = "reply with no command in flight"
            self.log.warning("agi reply with no command in flight; closing", reply=reply.raw[:200])
            self._close(reason, ChannelError(reason))
            return False
        return True

    def on_end(self, reason: str, error: Exception | None) -> None:
        """The connection ended: Asterisk closed it, it broke, or a line was over the limit."""
        if isinstance(error, LineTooLong):
            self.log.warning("agi reply line too long; closing")
            self._close(reason, ChannelError(reason))
        else:
            self._close(reason, None)

    def _deliver(self, reply: AGIReply) -> bool:
        if not self._waiters:
            return False
        waiter = self._waiters.pop(0)
        if not self._waiters:
            self._set_quiet()
        if waiter.future.done():
            self.log.debug("agi late reply dropped", command=waiter.command, reply=reply.raw[:200])
        else:
            waiter.future.set_result(reply)
        return True

    def _on_hangup(self) -> None:
        if self._state is ChannelState.OPEN:
            self._state = ChannelState.HUNG_UP
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(CallerHungUp(f"caller hung up during {waiter.command}"))
        self._signal_handler()

    def _signal_handler(self) -> None:
        """Tell the handler of the hang-up once (see the module docstring)."""
        if self._hangup_signalled:
            return
        self._hangup_signalled = True
        task = self._handler_task
        if task is None or task.done():
            return
        if self._op_depth > 0:
            self._cancel_deferred = True
        else:
            task.cancel("caller hung up")

    def _close(self, reason: str, error: Exception | None) -> None:
        if self._state is ChannelState.CLOSED:
            return
        self._state = ChannelState.CLOSED
        self._closed_error = error
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error or CallerHungUp(reason))
                # Nobody may be awaiting it any more (its command was cancelled): mark it seen.
                waiter.future.exception()
        self._waiters.clear()
        self._set_quiet()
        self._conn.close()
        self.log.debug("agi connection closed", reason=reason)
        if error is None:
            self._signal_handler()

    def _set_quiet(self) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None and not quiet.done():
            quiet.set_result(None)

    # ------------------------------------------------------------------ commands

    def _operation(self) -> _Operation:
        """Mark the handler as inside a channel method, for the hang-up rule above."""
        return _Operation(self)

    def _check_usable(self, verb: str, allow_dead: bool) -> None:
        if self._state is ChannelState.CLOSED:
            if self._closed_error is not None:
                raise ChannelError(f"{verb}: the AGI connection is closed ({self._closed_error})")
            raise CallerHungUp(f"{verb}: the AGI connection is closed")
        if self._state is ChannelState.HUNG_UP and not allow_dead:
            raise CallerHungUp(f"{verb}: the caller has hung up")

    async def command(
        self, verb: str, *args: object, expected_seconds: float | None = 0.0, allow_dead: bool = False
    ) -> AGIReply:
        """Send one command and return its 200 reply (511 → CallerHungUp, other codes → ChannelError).

        ``expected_seconds`` is how long the command itself may take (None: no limit, e.g. Dial); the
        reply must come within that plus ``command_timeout`` or the connection is closed and
        ChannelError raised. ``allow_dead`` sends it even after the hang-up: the typed methods use it
        only for the :data:`DEAD_OK_VERBS`; here it is the raw escape hatch (Asterisk answers 511)."""
        data = build_command(verb, *args)
        with self._operation():
            self._check_usable(verb, allow_dead)
            async with self._lock:
                self._check_usable(verb, allow_dead)
                if self._waiters:
                    # A reply is still owed (its command was cut short by the hang-up): wait for it.
                    await self._await_owed_reply()
                    self._check_usable(verb, allow_dead)
                loop = asyncio.get_running_loop()
                waiter = _Waiter(data.decode("utf-8", "replace").rstrip("\n"), loop.create_future())
                self._waiters.append(waiter)
                self.log.debug("agi command", command=waiter.command)
                timeout = None if expected_seconds is None else expected_seconds + self._command_timeout
                # One timer per command (not a timeout context, which also cancels and uncancels the task).
                timer = None if timeout is None else loop.call_later(timeout, _expire, waiter.future)
                try:
                    self._conn.write(data)
                    if self._conn.paused:  # the kernel's send buffer is full: rare
                        async with asyncio.timeout(timeout):
                            await self._conn.drain()
                    reply = await waiter.future
                except (_ReplyTimeout, TimeoutError):
                    self.log.error("agi reply timed out; closing the connection", command=waiter.command, timeout=timeout)
                    err = ChannelError(f"no reply to {verb} within {timeout:.1f} s")
                    self._close("reply timeout", err)
                    raise err from None
                except (ConnectionError, OSError) as exc:
                    self._close(f"write failed: {exc}", None)
                    raise CallerHungUp(f"{verb}: connection lost") from exc
                finally:
                    if timer is not None:
                        timer.cancel()
                self.log.debug("agi reply", command=waiter.command, reply=reply.raw[:200])
            return self._check_reply(verb, reply)

    async def _await_owed_reply(self) -> None:
        """Wait until every reply owed has arrived (or the connection ended), for at most
        ``command_timeout``; a reply that never comes closes the connection (ChannelError)."""
        owed = self._waiters[0].command
        if self._quiet is None or self._quiet.done():
            self._quiet = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._command_timeout):
                await asyncio.shield(self._quiet)
        except TimeoutError:
            self.log.error("agi reply timed out; closing the connection", command=owed, timeout=self._command_timeout,
                           late=True)
            err = ChannelError(f"no reply to {owed.split(' ', 1)[0]} within {self._command_timeout:.1f} s")
            self._close("reply timeout", err)
            raise err from None

    def _check_reply(self, verb: str, reply: AGIReply) -> AGIReply:
        if reply.code == 200:
            return reply
        if reply.code == 511:
            if self._state is ChannelState.OPEN:
                self._state = ChannelState.HUNG_UP
            raise CallerHungUp(f"{verb}: {reply.data}")
        first_line = (reply.data or "").split("\n", 1)[0]
        raise ChannelError(f"{verb}: Asterisk answered {reply.code} {first_line}".rstrip())

    async def _alive_after_minus_one(self, verb: str) -> None:
        """-1 means "prompt missing" on a live channel and "hung up" on a dead one: ask."""
        if self.hung_up:
            raise CallerHungUp(f"{verb}: the caller has hung up")
        reply = await self.command("CHANNEL STATUS")
        state = reply.result_int
        if state < 0:
            raise CallerHungUp(f"{verb}: channel gone (CHANNEL STATUS {state})")
        self.log.warning("prompt failed", command=verb, channel_state=state)

    def prompt(self, name: str) -> str:
        """``zh/main-menu`` → ``<prompt_path>/zh/main-menu`` (names are checked: no '&', no '..')."""
        if not _PROMPT.match(name) or ".." in name.split("/"):
            raise ValueError(f"not a safe prompt name: {name!r}")
        return f"{self._prompt_path}/{name}" if self._prompt_path else name

    # ------------------------------------------------------------------ Channel

    async def answer(self) -> None:
        reply = await self.command("ANSWER")
        if reply.result_int < 0:
            await self._alive_after_minus_one("ANSWER")

    async def play(self, prompts: Sequence[str], escape_digits: str = "") -> str | None:
        files = [self.prompt(p) for p in prompts]
        if not _DIGITS.match(escape_digits):
            raise ValueError(f"escape digits must be DTMF digits: {escape_digits!r}")
        with self._operation():
            for name in files:
                reply = await self.command("STREAM FILE", name, escape_digits, expected_seconds=self._prompt_max)
                code = reply.result_int
                if code > 0:
                    return chr(code)
                if code < 0:
                    await self._alive_after_minus_one("STREAM FILE")
            return None

    async def get_digits(self, prompts: Sequence[str], timeout_ms: int, max_digits: int) -> DigitsResult:
        if max_digits < 1 or timeout_ms < 1:
            raise ValueError("max_digits and timeout_ms must be positive")
        files = [self.prompt(p) for p in prompts]
        with self._operation():
            first = ""
            if len(files) > 1:
                # Earlier prompts can be typed over: the key pressed is the first digit.
                first = await self.play(prompts[:-1], ALL_DIGITS) or ""
                if first == "#":
                    return DigitsResult("", False)
                if first and max_digits == 1:
                    return DigitsResult(first, False)
            last = "" if first else (files[-1] if files else "")
            wanted = max_digits - len(first)
            expected = (0 if first else self._prompt_max) + timeout_ms / 1000 * wanted
            reply = await self.command("GET DATA", last, timeout_ms, wanted, expected_seconds=expected)
            result = reply.result or ""
            if result == "-1":
                await self._alive_after_minus_one("GET DATA")
                return DigitsResult(first, True)
            if not _DIGITS.match(result):
                raise ChannelError(f"GET DATA: unexpected result {reply.raw!r}")
            return DigitsResult(first + result, reply.data == "timeout")

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        if timeout_ms < 1:
            raise ValueError("timeout_ms must be positive (no waiting forever)")
        with self._operation():
            reply = await self.command("WAIT FOR DIGIT", timeout_ms, expected_seconds=timeout_ms / 1000)
            code = reply.result_int
            if code > 0:
                return chr(code)
            if code < 0:
                await self._alive_after_minus_one("WAIT FOR DIGIT")
            return None

    async def record(
        self, path: str, fmt: str, max_seconds: int, silence_seconds: int, beep: bool = True, *, escape_digits: str = "#"
    ) -> RecordResult:
        """RECORD FILE; a hang-up while recording raises CallerHungUp (Asterisk keeps the file)."""
        if not _TOKEN.match(fmt) or not _DIGITS.match(escape_digits) or max_seconds < 1 or silence_seconds < 0:
            raise ValueError("record: bad format, escape digits, or length")
        args: list[object] = [path, fmt, escape_digits, max_seconds * 1000, 0]
        if beep:
            args.append("BEEP")
        if silence_seconds:
            args.append(f"s={silence_seconds}")
        with self._operation():
            reply = await self.command("RECORD FILE", *args, expected_seconds=max_seconds + _RECORD_BEEP_SECONDS)
            code = reply.result_int
            endpos = reply.endpos or 0
            if reply.data == "hangup":
                raise CallerHungUp("caller hung up while recording")
            if code > 0:
                return RecordResult("dtmf", chr(code), endpos)
            if code == 0 and reply.data == "timeout":
                return RecordResult("timeout", None, endpos)
            if reply.data == "writefile":
                raise ChannelError(f"RECORD FILE: Asterisk cannot write {path!r}")
            if code < 0:
                await self._alive_after_minus_one("RECORD FILE")
            raise ChannelError(f"RECORD FILE failed: {reply.raw!r}")

    async def set_variable(self, name: str, value: str, *, allow_dead: bool = False) -> None:
        """The value arrives as one literal argument (``${...}`` is not evaluated by SET VARIABLE)."""
        await self.command("SET VARIABLE", _check_variable(name), value, allow_dead=allow_dead)

    async def get_variable(self, name: str, *, allow_dead: bool = False) -> str | None:
        reply = await self.command("GET VARIABLE", _check_variable(name), allow_dead=allow_dead)
        return reply.data if reply.result == "1" else None

    async def get_full_variable(self, expression: str, *, allow_dead: bool = False) -> str | None:
        """Evaluates ``expression`` in Asterisk (``${...}``): never pass caller data here."""
        reply = await self.command("GET FULL VARIABLE", expression, allow_dead=allow_dead)
        return reply.data if reply.result == "1" else None

    async def set_result(self, value: str) -> None:
        """SET VARIABLE CC_RESULT: ``done`` tells the dialplan not to use its fallback queue.
        Works after the hang-up too."""
        await self.set_variable("CC_RESULT", value, allow_dead=True)

    async def exec(self, application: str, *args: str, max_seconds: float | None = None) -> int:
        """EXEC an application; its arguments become one comma-separated options argument, so an
        argument may not contain ',' or '|'. No time limit unless ``max_seconds`` (Dial, Queue…)."""
        if not _TOKEN.match(application):
            raise ValueError(f"not an application name: {application!r}")
        for arg in args:
            if "," in arg or "|" in arg:
                raise ValueError(f"EXEC argument may not contain ',' or '|': {arg!r}")
        cmd_args: list[object] = [application]
        if args:
            cmd_args.append(",".join(args))
        reply = await self.command("EXEC", *cmd_args, expected_seconds=max_seconds)
        return reply.result_int

    async def music_on(self, music_class: str = "default") -> None:
        if not _TOKEN.match(music_class):
            raise ValueError(f"not a music class: {music_class!r}")
        await self.command("SET MUSIC", "ON", music_class)

    async def music_off(self) -> None:
        await self.command("SET MUSIC", "OFF")

    async def hangup(self) -> None:
        await self.command("HANGUP")
