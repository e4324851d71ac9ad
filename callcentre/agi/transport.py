"""The socket side of one FastAGI connection, driven by the event loop's callbacks.

What arrives is split into lines (res_agi ends every line with ``\\n``): while the ``agi_*`` header is
read they go to an :class:`~callcentre.agi.protocol.EnvAssembler`; afterwards, to the attached
channel, at once, in the loop's own callback. No task reads the socket and there is no stream buffer
between the kernel and the channel: a reply wakes the command waiting for it directly (one task
switch instead of two), and a session costs two tasks (the session, the handler) instead of three.
Lines that arrive after the header and before the channel is attached, and the end of the stream,
are kept for it. Writes go straight to the transport; :meth:`AGIConnection.drain` waits only while
the kernel's send buffer is full (the flow control of asyncio's own streams).

Limits are those of the stream reader this replaces: a line longer than ``line_max_bytes`` ends the
connection (in the header and after it), as does a header longer than ``header_max_bytes``.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from callcentre.agi.protocol import AGIEnv, EnvAssembler


class HeaderRejected(Exception):
    """The peer did not send a usable ``agi_*`` header (the reason is the message)."""


class LineTooLong(Exception):
    """A line after the header was longer than ``line_max_bytes``."""


class LineSink(Protocol):
    """Who takes the lines after the header (the channel)."""

    def on_line(self, raw: bytes) -> bool:
        """One line as received, with its ``\\n``; False: stop reading (the channel has closed)."""
        ...

    def on_end(self, reason: str, error: Exception | None) -> None:
        """The stream ended: end of file, a connection error, or a line over the limit (``error``)."""
        ...


class AGIConnection(asyncio.Protocol):
    """One FastAGI connection: the header, then lines to a :class:`LineSink`, and a writer's methods."""

    def __init__(self, on_connect: Callable[["AGIConnection"], bool], *, line_max_bytes: int,
                 header_max_bytes: int) -> None:
        self._on_connect = on_connect
        self._line_max = line_max_bytes
        self._header_max = header_max_bytes
        self.transport: asyncio.Transport | None = None
        self._partial = b""
        self._assembler: EnvAssembler | None = EnvAssembler()
        self._header_bytes = 0
        self._header_lines = 0
        self._header: asyncio.Future[tuple[AGIEnv, int]] | None = None
        self._sink: LineSink | None = None
        self._early: list[bytes] = []  # lines after the header, before the channel is attached
        self._ended: tuple[str, Exception | None] | None = None
        self._stopped = False  # nothing more is read (header refused, channel closed)
        self._lost = False
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        if self._on_connect(self):
            self._header = loop.create_future()
        else:
            self._stopped = True

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        buf = self._partial + data if self._partial else data
        start = 0
        limit = self._line_max
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > limit:
                self._overrun()
                return
            line = buf[start:end + 1]
            start = end + 1
            if not self._line(line) or self._stopped:
                return
        rest = buf[start:]
        if len(rest) > limit:
            self._overrun()
            return
        self._partial = rest

    def eof_received(self) -> bool:
        self._end("connection closed by Asterisk", None, eof=True)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self._end("connection closed by Asterisk", None, eof=True)
        else:
            self._end(f"connection error: {exc}", None, eof=False, exc=exc)
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ reading

    def _line(self, line: bytes) -> bool:
        assembler = self._assembler
        if assembler is not None:
            self._header_bytes += len(line)
            if self._header_bytes > self._header_max:
                self._refuse(f"header larger than agi.header_max_bytes ({self._header_max})")
                return False
            if assembler.feed(line):
                self._assembler = None
                if self._header is not None and not self._header.done():
                    self._header.set_result((assembler.env(), self._header_lines))
            else:
                self._header_lines += 1
            return True
        sink = self._sink
        if sink is None:
            self._early.append(line)
            return True
        if not sink.on_line(line):
            self._stopped = True
            return False
        return True

    def _overrun(self) -> None:
        if self._assembler is not None:
            self._refuse(f"header line longer than agi.line_max_bytes ({self._line_max})")
        else:
            self._stopped = True
            self._end("reply line too long", LineTooLong("reply line too long"), eof=False)

    def _refuse(self, reason: str) -> None:
        self._stopped = True
        self._assembler = None
        if self._header is not None and not self._header.done():
            self._header.set_exception(HeaderRejected(reason))

    def _end(self, reason: str, error: Exception | None, *, eof: bool, exc: Exception | None = None) -> None:
        if self._assembler is not None:  # still in the header
            if exc is not None:
                self._refuse(f"connection error while reading the header: {exc}")
            elif not self._header_lines and not self._partial:
                self._refuse("peer closed without sending a header")
            else:
                self._refuse(f"peer closed mid-header after {self._header_lines} lines")
            return
        if self._ended is not None:
            return
        self._ended = (reason, error)
        if self._sink is not None:
            self._sink.on_end(reason, error)

    async def read_header(self, timeout: float) -> tuple[AGIEnv, int]:  # noqa: ASYNC109 - the header's own limit
        """The environment and its line count; HeaderRejected (with the reason) otherwise."""
        assert self._header is not None, "connection refused at connect"
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._header)
        except TimeoutError:
            self._refuse(f"no complete header within agi.header_timeout_seconds ({timeout} s)")
            raise HeaderRejected(f"no complete header within agi.header_timeout_seconds ({timeout} s)") from None
        finally:
            if self._header.done() and not self._header.cancelled():
                self._header.exception()  # retrieved: no "never retrieved" warning

    def attach(self, sink: LineSink) -> None:
        """From now on lines go to ``sink``; what came before it (and the end) is handed over now."""
        self._sink = sink
        early, self._early = self._early, []
        for line in early:
            if not sink.on_line(line):
                self._stopped = True
                return
        if self._ended is not None:
            sink.on_end(*self._ended)

    def detach(self) -> None:
        """The channel is done with the connection (it holds no reference back to the channel)."""
        self._sink = None
        self._stopped = True

    # ------------------------------------------------------------------ writing (a stream writer's methods)

    @property
    def paused(self) -> bool:
        return self._paused

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the kernel's send buffer is full; ConnectionResetError once the connection is lost."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._paused:
            return
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.transport.get_extra_info(name, default) if self.transport is not None else default
