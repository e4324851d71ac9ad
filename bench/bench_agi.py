"""FastAGI: N concurrent IVR-like sessions over real sockets, and the time the server adds per command.

The server under test runs in its own process (as in production, Asterisk is another process): our
:class:`~callcentre.agi.server.FastAGIServer` with an IVR-like handler written against
:class:`~callcentre.agi.channel.AGIChannel` (answer, a variable read, greeting, menus with digits, a
variable write, a ticket read-out, the result), i.e. the protocol layer the IVR uses, without the
database. The floor is a bare asyncio server in the same kind of process that sends the very same
command lines (recorded from one real session) and reads the replies, doing nothing else.

The load client (this process) plays Asterisk: it sends the ``agi_*`` header, answers each command
with res_agi's reply text, and for STREAM FILE / GET DATA first waits a random "prompt" time (the
IVR-like think time, compressed from seconds to ``think`` to make load). Per command it measures the
time from writing a reply to reading the next command: the round trip plus what the server does.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Callable
from typing import Any

from bench import latency_ms, quiet_logs, raise_fd_limit

SCRIPT = "hotline"
_REPLIES = {
    "ANSWER": "200 result=0\n",
    "GET VARIABLE": "200 result=1 (1700000000.1)\n",
    "STREAM FILE": "200 result=0 endpos=10720\n",
    "GET DATA": "200 result=2\n",
    "SET VARIABLE": "200 result=1\n",
}
_THINKING = ("STREAM FILE", "GET DATA")


async def ivr_like(ch: Any) -> None:
    """The shape of a hotline call: 12 commands, 7 of them prompts or digit reads."""
    await ch.answer()
    await ch.get_variable("CHANNEL(linkedid)")
    await ch.play(["zh/greeting"], "0123456789*#")
    await ch.get_digits(["zh/main-menu"], 5000, 1)
    await ch.play(["zh/transfer-agent"])
    await ch.set_variable("CC_PATH", "2>1")
    await ch.get_digits(["zh/repair-menu"], 5000, 1)
    await ch.play(["zh/ticket-created", "zh/digit-1", "zh/digit-2"])
    await ch.set_variable("CC_TICKET", "R20261124-0012")
    await ch.set_result("done")


# ---------------------------------------------------------------- servers (child process)

async def _serve_ours(conn: Any) -> None:
    from callcentre.agi.server import FastAGIServer
    from callcentre.config import AGIConfig

    server = FastAGIServer(AGIConfig(host="127.0.0.1", port=0, max_sessions=5000), lambda env: ivr_like,
                           prompt_path="callcentre")
    await server.start()
    conn.send(server.port)
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    server.stop_accepting()
    await server.stop(grace_seconds=2.0)


async def _serve_echo(conn: Any, lines: list[str]) -> None:
    """The floor: read the header, then send the recorded lines one by one, reading each reply."""
    payload = [(ln + "\n").encode() for ln in lines]

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()).strip():
                pass
            for line in payload:
                writer.write(line)
                if not await reader.readline():
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, backlog=4096)
    conn.send(server.sockets[0].getsockname()[1])
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    server.close()
    await server.wait_closed()


def _server_main(kind: str, conn: Any, lines: list[str]) -> None:
    raise_fd_limit(8192)
    quiet_logs()
    if kind == "ours":
        asyncio.run(_serve_ours(conn))
    else:
        asyncio.run(_serve_echo(conn, lines))


class _ServerProcess:
    """A server of ``kind`` in a child process; ``port`` once started."""

    def __init__(self, kind: str, lines: list[str] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_main, args=(kind, child, lines or []), daemon=True)
        self.port = 0

    def __enter__(self) -> "_ServerProcess":
        self._proc.start()
        if not self._conn.poll(30):
            self._proc.kill()
            raise RuntimeError("benchmark server process did not start")
        self.port = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# ---------------------------------------------------------------- load client (this process)

def _header(n: int, port: int) -> bytes:
    fields = [
        ("agi_network", "yes"), ("agi_network_script", SCRIPT), ("agi_request", f"agi://127.0.0.1:{port}/{SCRIPT}"),
        ("agi_channel", f"PJSIP/owner-phone-{n:08x}"), ("agi_language", "en"), ("agi_type", "PJSIP"),
        ("agi_uniqueid", f"1700000000.{n}"), ("agi_version", "20.20.1"), ("agi_callerid", "13800138000"),
        ("agi_calleridname", "Zhang San"), ("agi_callingpres", "0"), ("agi_callingani2", "0"),
        ("agi_callington", "0"), ("agi_callingtns", "0"), ("agi_dnid", "8000"), ("agi_rdnis", "unknown"),
        ("agi_context", "hotline-in"), ("agi_extension", "8000"), ("agi_priority", "2"), ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""), ("agi_threadid", str(140185524098752 + n)),
    ]
    return ("".join(f"{k}: {v}\n" for k, v in fields) + "\n").encode()


def _reply(line: str) -> tuple[str, bool]:
    upper = line.upper()
    for verb, text in _REPLIES.items():
        if upper.startswith(verb):
            return text, verb in _THINKING
    return "200 result=0\n", False


async def _session(n: int, port: int, think: tuple[float, float], rng: random.Random,
                   rtts: list[float], firsts: list[float], record: list[str] | None) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_header(n, port))
        sent = time.perf_counter()
        first = True
        while True:
            raw = await reader.readline()
            got = time.perf_counter()
            if not raw:
                return not first
            (firsts if first else rtts).append(got - sent)
            first = False
            line = raw.decode().rstrip("\n")
            if record is not None:
                record.append(line)
            text, thinking = _reply(line)
            if thinking:
                await asyncio.sleep(rng.uniform(*think))
            writer.write(text.encode())
            sent = time.perf_counter()
    except ConnectionError:
        return False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def _load(port: int, sessions: int, think: tuple[float, float], ramp: float) -> dict[str, Any]:
    rng = random.Random(sessions)
    rtts: list[float] = []
    firsts: list[float] = []

    async def one(n: int) -> bool:
        await asyncio.sleep(ramp * n / max(1, sessions))
        return await _session(n, port, think, rng, rtts, firsts, None)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(n) for n in range(sessions)), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    ok = sum(1 for r in results if r is True)
    return {
        "sessions": sessions,
        "completed": ok,
        "failed": sessions - ok,
        "commands": len(rtts) + len(firsts),
        "commands_per_s": round((len(rtts) + len(firsts)) / elapsed),
        "per_command_rtt": latency_ms(rtts),
        "connect_to_first_command": latency_ms(firsts),
        "seconds": round(elapsed, 2),
    }


async def _record_lines(port: int) -> list[str]:
    lines: list[str] = []
    await _session(0, port, (0.0, 0.0), random.Random(0), [], [], lines)
    return lines


def run(levels: tuple[int, ...] = (100, 500, 1000), think: tuple[float, float] = (0.1, 1.0), ramp: float = 1.0,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    raise_fd_limit(2 * max(levels) + 512)
    out: dict[str, Any] = {"think_seconds": list(think), "levels": {}}
    with _ServerProcess("ours") as ours:
        lines = asyncio.run(_record_lines(ours.port))
        out["commands_per_session"] = len(lines)
        for n in levels:
            res = asyncio.run(_load(ours.port, n, think, ramp))
            out["levels"].setdefault(str(n), {})["ours"] = res
            progress(f"  ours  {n:>5} sessions: p50 {res['per_command_rtt']['p50_ms']} ms, "
                     f"p99 {res['per_command_rtt']['p99_ms']} ms, {res['completed']} completed")
    with _ServerProcess("echo", lines) as echo:
        for n in levels:
            res = asyncio.run(_load(echo.port, n, think, ramp))
            out["levels"][str(n)]["echo_floor"] = res
            progress(f"  floor {n:>5} sessions: p50 {res['per_command_rtt']['p50_ms']} ms, "
                     f"p99 {res['per_command_rtt']['p99_ms']} ms, {res['completed']} completed")
    for level in out["levels"].values():
        a, b = level["ours"]["per_command_rtt"], level["echo_floor"]["per_command_rtt"]
        level["added_p50_ms"] = round(a["p50_ms"] - b["p50_ms"], 3)
        level["added_p99_ms"] = round(a["p99_ms"] - b["p99_ms"], 3)
    out["target_p99_ms_at_1000"] = 10.0
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
