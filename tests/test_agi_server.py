"""The FastAGI server and channel against bad peers, hang-ups at awkward moments, and hostile values.

Every test uses real sockets on 127.0.0.1 with port 0; a small scripted peer plays Asterisk.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from callcentre.agi.channel import AGIChannel
from callcentre.agi.protocol import unquote_args
from callcentre.agi.server import FastAGIServer
from callcentre.config import AGIConfig
from callcentre.domain.ports import CallerHungUp, ChannelError, DigitsResult, RecordResult

Handler = Callable[[AGIChannel], Awaitable[None]]


def header(script: str | None = "hotline", *extra: bytes) -> bytes:
    lines = [b"agi_network: yes\n"]
    if script is not None:
        lines.append(b"agi_network_script: " + script.encode() + b"\n")
    lines += [
        b"agi_channel: PJSIP/trunk-00000001\n",
        b"agi_uniqueid: 1795351990.7\n",
        b"agi_callerid: 13800138000\n",
        b"agi_calleridname: Zhang San\n",
        *extra,
        b"\n",
    ]
    return b"".join(lines)


class Peer:
    """Plays Asterisk on one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: FastAGIServer, data: bytes = b"") -> "Peer":
        assert server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        peer = cls(reader, writer)
        if data:
            await peer.send(data)
        return peer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def expect(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), 3.0)
        assert line, "server closed the connection"
        return line

    async def eof(self) -> bytes:
        """Everything left until the server closes (b'' when it wrote nothing more)."""
        try:
            return await asyncio.wait_for(self.reader.read(), 3.0)
        except ConnectionResetError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def until(cond: Callable[[], bool], limit: float = 3.0) -> None:
    """Wait for a condition the server reaches on its own (bounded; not a speed assertion)."""
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110 - server counters have no event to wait on
            await asyncio.sleep(0.005)


@pytest.fixture
async def start():
    servers: list[FastAGIServer] = []

    async def make(router: Callable[..., Handler | None], **overrides: object) -> FastAGIServer:
        cfg = {"port": 0, "header_timeout_seconds": 1.0, "command_timeout_seconds": 2.0, **overrides}
        prompt_path = str(cfg.pop("prompt_path", ""))
        server = FastAGIServer(AGIConfig(**cfg), router, prompt_path=prompt_path)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(0.5)


def one(handler: Handler) -> Callable[..., Handler | None]:
    return lambda env: handler if env.script == "hotline" else None


async def _noop(ch: AGIChannel) -> None:
    return None


# ---------------------------------------------------------------------------------------- bad peers


async def test_peer_closing_mid_header_is_dropped_and_server_keeps_serving(start) -> None:
    served = asyncio.Event()

    async def handler(ch: AGIChannel) -> None:
        served.set()

    server = await start(one(handler))
    with capture_logs() as logs:
        peer = await Peer.connect(server, b"agi_network: yes\nagi_network_script: hot")
        await peer.close()
        await until(lambda: server.stats.bad_header == 1)
    assert any("mid-header" in str(e.get("reason")) for e in logs)
    good = await Peer.connect(server, header())
    await asyncio.wait_for(served.wait(), 3)
    assert await good.eof() == b""
    await good.close()


async def test_ten_megabyte_header_is_refused(start) -> None:
    server = await start(one(_noop))
    with capture_logs() as logs:
        peer = await Peer.connect(server)
        chunk = b"agi_padding: " + b"x" * 100 + b"\n"
        try:
            for _ in range(10 * 1024 * 1024 // len(chunk)):
                peer.writer.write(chunk)
                if peer.writer.transport.get_write_buffer_size() > 1 << 20:
                    await peer.writer.drain()
        except (ConnectionError, OSError):
            pass  # the server hung up on us, as it should
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.stats.bad_header == 1)
    assert any("header_max_bytes" in str(e.get("reason")) for e in logs)


async def test_endless_header_line_is_refused(start) -> None:
    server = await start(one(_noop))
    peer = await Peer.connect(server)
    try:
        peer.writer.write(b"agi_network_script: " + b"y" * 200_000)
        await peer.writer.drain()
    except (ConnectionError, OSError):
        pass
    assert await peer.eof() == b""
    await peer.close()
    await until(lambda: server.stats.bad_header == 1)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00\x81garbage\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        header(None),  # a header without agi_network_script
    ],
    ids=["non-utf8-garbage", "http", "no-script"],
)
async def test_not_an_agi_header_is_refused(start, data: bytes) -> None:
    server = await start(one(_noop))
    with capture_logs() as logs:
        peer = await Peer.connect(server, data)
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.stats.bad_header == 1)
    assert any(e["event"].startswith("fastagi header rejected") for e in logs)


async def test_header_timeout(start) -> None:
    server = await start(one(_noop), header_timeout_seconds=0.2)
    peer = await Peer.connect(server, b"agi_network: yes\n")
    assert await peer.eof() == b""
    await peer.close()
    assert server.stats.bad_header == 1


async def test_non_utf8_caller_name_is_kept_with_replacement(start) -> None:
    seen: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        seen.append(ch.caller_name)

    server = await start(lambda env: handler)
    peer = await Peer.connect(server, header("hotline", b"agi_calleridname: \xd5\xc5\xc8\xfd\n"))
    assert await peer.eof() == b""
    await peer.close()
    assert seen == ["\ufffd\ufffd\ufffd\ufffd"]


@pytest.mark.parametrize("name,shown", [
    (b"x\r\ny", "x\\r\\ny"),
    (b"a\n\nagi_network_script: evil\n\n200 result=1", "a\\n\\nagi_network_script: evil\\n\\n200 result=1"),
])
async def test_caller_name_with_crlf_as_asterisk_sends_it(start, name: bytes, shown: str) -> None:
    """Asterisk 20 sends CALLERID(name) raw in the environment (seen on the real PBX): the name is
    kept whole and shown escaped, and the session goes on as usual (its header ends where Asterisk's does)."""
    from test_agi_protocol import _asterisk_header

    seen: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        seen.append((ch.caller_name, ch.env_info.script, ch.uniqueid))
        await ch.answer()
        await ch.set_result("done")

    server = await start(one(handler))
    with capture_logs() as logs:
        peer = await Peer.connect(server, _asterisk_header(name))
        assert await peer.expect() == b"ANSWER\n"
        await peer.send(b"200 result=0\n")
        assert await peer.expect() == b"SET VARIABLE CC_RESULT done\n"
        await peer.send(b"200 result=1\n")
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert seen == [(shown, "hotline", "1796227089.1")]
    assert server.stats.bad_header == 0
    assert [e["fields"] for e in logs if e["event"].startswith("fastagi header values held control")] == [
        ["agi_calleridname"]]
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_unknown_script_is_closed_without_a_word(start) -> None:
    server = await start(one(_noop))
    with capture_logs() as logs:
        peer = await Peer.connect(server, header("nosuchscript"))
        assert await peer.eof() == b""  # nothing written: CC_RESULT unset, the dialplan falls back
        await peer.close()
        await until(lambda: server.stats.unknown_script == 1)
    assert any(e.get("script") == "nosuchscript" for e in logs)


async def test_disallowed_peer_is_closed_at_once(start) -> None:
    called = False

    def router(env):
        nonlocal called
        called = True
        return _noop

    server = await start(router, allowed_peers=["192.0.2.0/24"])  # TEST-NET-1: excludes 127.0.0.1
    with capture_logs() as logs:
        peer = await Peer.connect(server, header())
        assert await peer.eof() == b""
        await peer.close()
    assert server.stats.rejected_peer == 1 and server.stats.accepted == 0 and not called
    assert any("allowed_peers" in e["event"] and e.get("peer") == "127.0.0.1" for e in logs)


async def test_max_sessions(start) -> None:
    release = asyncio.Event()
    inside = asyncio.Event()

    async def handler(ch: AGIChannel) -> None:
        inside.set()
        await release.wait()

    server = await start(one(handler), max_sessions=1)
    first = await Peer.connect(server, header())
    await asyncio.wait_for(inside.wait(), 3)
    assert server.active_sessions == 1
    second = await Peer.connect(server, header())
    assert await second.eof() == b""
    await second.close()
    assert server.stats.rejected_busy == 1
    release.set()
    assert await first.eof() == b""
    await first.close()
    await until(lambda: server.active_sessions == 0)


# ---------------------------------------------------------------------------------------- hang-ups


async def test_hangup_while_idle_cancels_handler_and_cleanup_runs_once(start) -> None:
    idle = asyncio.Event()
    cleanups: list[bool] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.answer()
            idle.set()
            await asyncio.sleep(30)  # e.g. waiting for an agent
        finally:
            cleanups.append(ch.hung_up)
            await ch.set_result("done")

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b"ANSWER\n"
    await peer.send(b"200 result=0\n")
    await asyncio.wait_for(idle.wait(), 3)
    await peer.send(b"HANGUP\n")
    assert await peer.expect() == b"SET VARIABLE CC_RESULT done\n"
    await peer.send(b"200 result=1\n")
    assert await peer.eof() == b""
    await peer.close()
    await until(lambda: server.active_sessions == 0)
    assert cleanups == [True]


@pytest.mark.parametrize("hang_up", [False, True])
async def test_an_ended_session_is_freed_without_the_garbage_collector(start, hang_up: bool) -> None:
    """A session's channel (socket, buffers, AGI environment) is freed by reference counting as soon
    as the session ends. A reference cycle through the reader task's CancelledError kept each one
    until a full collection and grew the heap under steady traffic (bench/soak.py)."""
    import gc
    import weakref

    refs: list[weakref.ref[AGIChannel]] = []
    idle = asyncio.Event()

    async def handler(ch: AGIChannel) -> None:
        refs.append(weakref.ref(ch))
        await ch.answer()
        if hang_up:
            idle.set()
            await asyncio.sleep(30)  # waiting for an agent when the caller hangs up: cancelled

    server = await start(one(handler))
    gc.collect()
    gc.disable()
    try:
        peer = await Peer.connect(server, header())
        assert await peer.expect() == b"ANSWER\n"
        await peer.send(b"200 result=0\n")
        if hang_up:
            await asyncio.wait_for(idle.wait(), 3)
            await peer.send(b"HANGUP\n")
        await peer.eof()
        await peer.close()
        await until(lambda: server.active_sessions == 0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert refs and refs[0]() is None, gc.get_referrers(refs[0]())
    finally:
        gc.enable()


async def test_lines_that_come_with_the_header_reach_the_channel(start) -> None:
    """Everything after the header's blank line in the same segment (a reply, a hang-up) is kept for
    the channel and handed over when it is attached, in order."""
    seen: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        seen.append(await ch.get_variable("X"))
        try:
            await ch.answer()
        except CallerHungUp:
            seen.append("hung up")

    server = await start(one(handler))
    with capture_logs() as logs:
        peer = await Peer.connect(server, header())
        assert await peer.expect() == b"GET VARIABLE X\n"
        # The reply and the hang-up arrive in one segment with nothing in between.
        await peer.send(b"200 result=1 (first)\nHANGUP\n")
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert seen[0] == "first"
    assert not [e for e in logs if e["log_level"] == "error"], logs


async def test_a_hangup_sent_with_the_header_ends_the_session_quietly(start) -> None:
    server = await start(one(_noop))
    with capture_logs() as logs:
        peer = await Peer.connect(server, header() + b"HANGUP\n")
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert server.stats.accepted == 1 and server.stats.handler_errors == 0 and server.stats.bad_header == 0
    assert not [e for e in logs if e["log_level"] == "error"], logs


async def test_a_reply_line_over_the_limit_ends_the_session(start) -> None:
    errors: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.get_variable("X")
        except ChannelError as exc:
            errors.append(str(exc))

    server = await start(one(handler), line_max_bytes=256)
    with capture_logs() as logs:
        peer = await Peer.connect(server, header())
        assert await peer.expect() == b"GET VARIABLE X\n"
        await peer.send(b"200 result=1 (" + b"x" * 1000)
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert errors and "reply line too long" in errors[0]
    assert any(e["event"] == "agi reply line too long; closing" for e in logs)


async def test_hangup_between_command_and_reply(start) -> None:
    outcome: dict[str, object] = {}

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.get_variable("DIALSTATUS")
        except CallerHungUp:
            outcome["hung_up"] = True
        with pytest.raises(CallerHungUp):
            await ch.play(["zh/main-menu"])  # refused locally: nothing written
        outcome["fresh"] = await ch.get_variable("DIALSTATUS", allow_dead=True)

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b"GET VARIABLE DIALSTATUS\n"
    await peer.send(b"HANGUP\n")
    await until(lambda: "hung_up" in outcome)
    await peer.send(b"200 result=1 (ANSWER)\n")  # the late reply
    assert await peer.expect() == b"GET VARIABLE DIALSTATUS\n"
    await peer.send(b"200 result=1 (FRESH)\n")
    assert await peer.eof() == b""
    await peer.close()
    assert outcome == {"hung_up": True, "fresh": "FRESH"}


async def _hang_up_during_channel_status(start, **overrides: object):
    """STREAM FILE answers -1, the channel asks CHANNEL STATUS, and HANGUP arrives before its reply:
    the real PBX's order when a caller hangs up during a prompt (tests/pbx/test_pbx_agi.py)."""
    told = asyncio.Event()
    seen: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.play(["zh/greeting"])
        except CallerHungUp:
            seen.append("hung up")
            told.set()
            try:
                await ch.set_result("done")
                seen.append("result set")
            except (CallerHungUp, ChannelError) as exc:
                seen.append(type(exc).__name__)

    server = await start(one(handler), **overrides)
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b'STREAM FILE zh/greeting ""\n'
    await peer.send(b"200 result=-1 endpos=5120\n")
    assert await peer.expect() == b"CHANNEL STATUS\n"
    await peer.send(b"HANGUP\n")
    await asyncio.wait_for(told.wait(), 3)  # the handler learns of the hang-up at once
    return server, peer, seen


async def test_no_command_is_written_while_a_reply_is_owed(start) -> None:
    """res_agi reads with a buffered fgets but polls the socket: a line written before the previous
    reply came sits unread. So SET VARIABLE waits for CHANNEL STATUS's late reply before it is written."""
    with capture_logs() as logs:
        server, peer, seen = await _hang_up_during_channel_status(start)
        with pytest.raises(TimeoutError):  # nothing may be written before the owed reply arrived
            await asyncio.wait_for(peer.reader.readline(), 0.3)
        await peer.send(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        assert await peer.expect() == b"SET VARIABLE CC_RESULT done\n"
        await peer.send(b"200 result=1\n")
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert seen == ["hung up", "result set"]
    assert not [e for e in logs if e["log_level"] == "error"], logs


async def test_an_owed_reply_that_never_comes_is_a_reply_timeout(start) -> None:
    with capture_logs() as logs:
        server, peer, seen = await _hang_up_during_channel_status(start, command_timeout_seconds=0.3)
        assert await peer.eof() == b""  # never written; closed after the owed reply's timeout
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert seen == ["hung up", "ChannelError"]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["command"], e.get("late")) for e in errors] == [
        ("agi reply timed out; closing the connection", "CHANNEL STATUS", True)]


async def test_eof_instead_of_an_owed_reply_ends_the_session_quietly(start) -> None:
    with capture_logs() as logs:
        server, peer, seen = await _hang_up_during_channel_status(start)
        await peer.close()  # Asterisk ends the AGI instead of answering
        await until(lambda: server.active_sessions == 0)
    assert seen == ["hung up", "CallerHungUp"]
    assert not [e for e in logs if e["log_level"] == "error"], logs


async def test_reply_timeout_closes_connection(start) -> None:
    errors: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        with pytest.raises(ChannelError) as first:
            await ch.get_variable("X")
        errors.append(str(first.value))
        with pytest.raises(ChannelError):
            await ch.set_result("done")

    server = await start(one(handler), command_timeout_seconds=0.2)
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b"GET VARIABLE X\n"
    assert await peer.eof() == b""  # we never answered: the server gave up and closed
    await peer.close()
    await until(lambda: server.active_sessions == 0)
    assert errors and "no reply to GET VARIABLE" in errors[0]


async def test_shielded_commit_survives_hangup(start) -> None:
    committed: list[str] = []
    started = asyncio.Event()
    finish = asyncio.Event()
    after: list[str] = []

    async def commit() -> str:
        started.set()
        await finish.wait()
        committed.append("T1")
        return "T1"

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.shielded(commit())
            after.append("not cancelled")
        except asyncio.CancelledError:
            after.append("cancelled after commit" if committed else "cancelled before commit")
            raise

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    await asyncio.wait_for(started.wait(), 3)
    await peer.send(b"HANGUP\n")
    await asyncio.sleep(0.05)
    assert committed == []
    finish.set()
    assert await peer.eof() == b""
    await peer.close()
    await until(lambda: server.active_sessions == 0)
    assert committed == ["T1"] and after == ["cancelled after commit"]


async def test_eof_from_asterisk_ends_an_idle_handler(start) -> None:
    ended = asyncio.Event()
    inside = asyncio.Event()

    async def handler(ch: AGIChannel) -> None:
        try:
            inside.set()
            await asyncio.sleep(30)
        finally:
            ended.set()

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    await asyncio.wait_for(inside.wait(), 3)
    await peer.close()
    await asyncio.wait_for(ended.wait(), 3)
    await until(lambda: server.active_sessions == 0)


# ---------------------------------------------------------------------------------------- replies


async def test_error_codes_and_usage_block(start) -> None:
    got: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        with pytest.raises(ChannelError):
            await ch.command("GET DATA")
        got.append("520")
        with pytest.raises(ChannelError):
            await ch.command("NOSUCH COMMAND")
        got.append("510")
        got.append(await ch.get_variable("X") or "")
        with pytest.raises(CallerHungUp):
            await ch.answer()
        got.append("511")

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b"GET DATA\n"
    await peer.send(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
        b"520 End of proper usage.\n"
    )
    assert await peer.expect() == b"NOSUCH COMMAND\n"
    await peer.send(b"510 Invalid or unknown command\n")
    assert await peer.expect() == b"GET VARIABLE X\n"
    await peer.send(b"200 result=1 (still in step)\n")
    assert await peer.expect() == b"ANSWER\n"
    await peer.send(b"511 Command Not Permitted on a dead channel or intercept routine\n")
    assert await peer.eof() == b""
    await peer.close()
    assert got == ["520", "510", "still in step", "511"]


@pytest.mark.parametrize("status,outcome", [(b"200 result=6\n", "continued"), (b"511 Command Not Permitted on a dead channel\n", "hung up")])
async def test_minus_one_is_resolved_by_channel_status(start, status: bytes, outcome: str) -> None:
    result: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            await ch.play(["zh/missing", "zh/next"])
            result.append("continued")
        except CallerHungUp:
            result.append("hung up")

    server = await start(one(handler), prompt_path="callcentre")
    with capture_logs() as logs:
        peer = await Peer.connect(server, header())
        assert await peer.expect() == b'STREAM FILE callcentre/zh/missing ""\n'
        await peer.send(b"200 result=-1 endpos=0\n")
        assert await peer.expect() == b"CHANNEL STATUS\n"
        await peer.send(status)
        if outcome == "continued":
            assert await peer.expect() == b'STREAM FILE callcentre/zh/next ""\n'
            await peer.send(b"200 result=0 endpos=1200\n")
        assert await peer.eof() == b""
        await peer.close()
        await until(lambda: server.active_sessions == 0)
    assert result == [outcome]
    assert any(e["event"] == "prompt failed" for e in logs) == (outcome == "continued")


async def test_get_digits_type_ahead_and_prompt_prefix(start) -> None:
    results: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        results.append(await ch.get_digits(["zh/enter-unit", "zh/then-hash"], 5000, 4))
        results.append(await ch.get_digits(["zh/enter-unit", "zh/then-hash"], 5000, 4))
        results.append(await ch.play(["en/menu"], "12"))
        for bad in ("../etc/passwd", "zh/a&b", "zh/x y"):
            with pytest.raises(ValueError):
                await ch.play([bad])

    server = await start(one(handler), prompt_path="callcentre")
    peer = await Peer.connect(server, header())
    # Typed over the first prompt: "2", then the rest by GET DATA with no prompt.
    assert await peer.expect() == b"STREAM FILE callcentre/zh/enter-unit 0123456789*#\n"
    await peer.send(b"200 result=50 endpos=800\n")
    assert await peer.expect() == b'GET DATA "" 5000 3\n'
    await peer.send(b"200 result=34 (timeout)\n")
    # Listened to everything: GET DATA plays the last prompt.
    assert await peer.expect() == b"STREAM FILE callcentre/zh/enter-unit 0123456789*#\n"
    await peer.send(b"200 result=0 endpos=8000\n")
    assert await peer.expect() == b"GET DATA callcentre/zh/then-hash 5000 4\n"
    await peer.send(b"200 result=1201\n")
    assert await peer.expect() == b"STREAM FILE callcentre/en/menu 12\n"
    await peer.send(b"200 result=49 endpos=100\n")
    assert await peer.eof() == b""
    await peer.close()
    assert results == [DigitsResult("234", True), DigitsResult("1201", False), "1"]


async def test_record_outcomes(start) -> None:
    results: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        results.append(await ch.record("/rec/a", "wav", 60, 4))
        try:
            await ch.record("/rec/b", "wav", 60, 0, beep=False)
        except CallerHungUp:
            results.append("hangup")

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    assert await peer.expect() == b"RECORD FILE /rec/a wav # 60000 0 BEEP s=4\n"
    await peer.send(b"200 result=35 (dtmf) endpos=16000\n")
    assert await peer.expect() == b"RECORD FILE /rec/b wav # 60000 0\n"
    await peer.send(b"200 result=-1 (hangup) endpos=8000\nHANGUP\n")
    assert await peer.eof() == b""
    await peer.close()
    assert results == [RecordResult("dtmf", "#", 16000), "hangup"]


# ---------------------------------------------------------------------------------------- hostile values


async def test_hostile_values_in_set_variable(start) -> None:
    hostile = ['"; EXEC System rm -rf /', "${SHELL(rm -rf /)}", 'Zhang "San" \\ 张三']
    errors: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        for value in hostile:
            await ch.set_variable("CC_NAME", value)
        for bad_value in ("line\nEXEC System reboot", "a\rb", "nul\x00"):
            with pytest.raises(ValueError):
                await ch.set_variable("CC_NAME", bad_value)
            errors.append("value")
        for bad_name in ("X Y", "${X}", "A\nB", "SHELL(rm -rf /)"):
            with pytest.raises(ValueError):
                await ch.set_variable(bad_name, "1")
            errors.append("name")
        with pytest.raises(ValueError):
            await ch.exec("Dial", "SIP/a,10,G(evil)")
        await ch.set_result("done")

    server = await start(one(handler))
    peer = await Peer.connect(server, header())
    for value in hostile:
        line = await peer.expect()
        assert unquote_args(line.decode().rstrip("\n")) == ["SET", "VARIABLE", "CC_NAME", value]
        await peer.send(b"200 result=1\n")
    # Nothing of the refused values reached the socket: the next line is the result.
    assert await peer.expect() == b"SET VARIABLE CC_RESULT done\n"
    await peer.send(b"200 result=1\n")
    assert await peer.eof() == b""
    await peer.close()
    assert errors == ["value"] * 3 + ["name"] * 4


# ---------------------------------------------------------------------------------------- shutdown


async def test_stop_cancels_sessions_after_grace_and_leaks_no_tasks() -> None:
    cleanups: list[str] = []
    inside: list[str] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            inside.append(ch.uniqueid)
            await asyncio.sleep(30)
        finally:
            cleanups.append("cleanup")

    server = FastAGIServer(AGIConfig(port=0), lambda env: handler)
    await server.start()
    assert server.listening
    peers = [await Peer.connect(server, header()) for _ in range(3)]
    await until(lambda: len(inside) == 3)
    await server.stop(grace_seconds=0.1)
    assert cleanups == ["cleanup"] * 3
    assert server.active_sessions == 0 and not server.listening
    for peer in peers:
        assert await peer.eof() == b""
        await peer.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_stop_accepting_lets_calls_finish() -> None:
    release = asyncio.Event()
    finished: list[bool] = []

    async def handler(ch: AGIChannel) -> None:
        await release.wait()
        await ch.set_result("done")
        finished.append(True)

    server = FastAGIServer(AGIConfig(port=0), lambda env: handler)
    await server.start()
    port = server.port
    peer = await Peer.connect(server, header())
    await until(lambda: server.active_sessions == 1)
    server.stop_accepting()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    release.set()
    assert await peer.expect() == b"SET VARIABLE CC_RESULT done\n"
    await peer.send(b"200 result=1\n")
    await server.stop(grace_seconds=2)
    assert finished == [True]
    await peer.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
