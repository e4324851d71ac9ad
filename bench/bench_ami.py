"""AMI ingest: events per second through parse -> CallTracker -> ACD listener -> hub publish.

Input: every byte Asterisk sent in tests/fixtures/ami-*.txt (real Asterisk 20 captures), repeated
``repeat`` times with the Uniqueid/Linkedid values renumbered on each pass, so every pass is a fresh
set of calls (a replay with the same ids would be dropped as stale and flatter us).

* reference: panoramisk's bare parser on the same bytes (what ``AMIProtocol.data_received`` does:
  decode, split on the blank line, ``Message.from_line``), 64 KiB chunks, no callbacks;
* end to end in memory: the same bytes fed to :class:`~callcentre.ami.link.AMILink`'s reader
  (``readuntil`` framing, ``parse_message``, dispatch) calling the application's own ``on_event``
  (``callcentre.app._on_event``: CallTracker.feed with the ACD listener, ACD's own AMI hook, the
  call-back scheduler), built by ``build_app`` with ``agents`` agents loaded and a wallboard
  subscriber on the hub;
* end to end over a loopback socket: the same, but the bytes arrive through TCP from a writer task.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import REPO, quiet_logs

_ID_FIELD = re.compile(rb"^((?:[A-Za-z]*)(?:Uniqueid|Linkedid)): (\d+)\.(\d+)\r$", re.MULTILINE)
_CHUNK = 65536


def capture_bytes() -> bytes:
    """The bytes Asterisk sent in every AMI capture: banners and ``Event: Shutdown`` removed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.captures import from_asterisk

    parts = []
    for path in sorted((REPO / "tests" / "fixtures").glob("ami-*.txt")):
        data = from_asterisk(path.name)
        lines = [ln for ln in data.split(b"\r\n") if not ln.startswith(b"Asterisk Call Manager/")]
        # Event: Shutdown ends an AMI session (the link reconnects): it would stop the replay here.
        blocks = [b for b in b"\r\n".join(lines).split(b"\r\n\r\n") if b.strip() and b"Event: Shutdown" not in b]
        parts.append(b"".join(b.strip(b"\r\n") + b"\r\n\r\n" for b in blocks))
    return b"".join(parts)


def stream(repeat: int) -> tuple[bytes, int]:
    """``repeat`` passes with fresh ids; returns the bytes and how many events they hold."""
    base = capture_bytes()
    passes = []
    for r in range(repeat):
        shift = (r + 1) * 1_000_000
        passes.append(_ID_FIELD.sub(lambda m, s=shift: m[1] + b": " + str(int(m[2]) + s).encode() + b"." + m[3] + b"\r", base))
    data = b"".join(passes)
    events = sum(1 for block in data.split(b"\r\n\r\n") if block.lstrip(b"\r\n").startswith(b"Event:"))
    return data, events


def panoramisk_bare(data: bytes) -> tuple[float, int]:
    """Seconds for panoramisk's parser over ``data`` and the events it produced."""
    from panoramisk import utils
    from panoramisk.message import Message

    sep = utils.EOL + utils.EOL
    events = 0
    carry = ""
    t0 = time.perf_counter()
    for i in range(0, len(data), _CHUNK):
        text = carry + data[i:i + _CHUNK].decode("utf-8", "ignore")
        blocks = text.split(sep)
        carry = blocks.pop(-1)
        for block in blocks:
            msg = Message.from_line(block.strip())
            if msg is not None and "Event" in msg:
                events += 1
    return time.perf_counter() - t0, events


class _Counting:
    """Counts the events the application's on_event saw (one attribute lookup and an add)."""

    def __init__(self, inner: Callable[[Any], None]) -> None:
        self.inner = inner
        self.count = 0

    def __call__(self, message: Any) -> None:
        self.count += 1
        self.inner(message)


async def _app(tmp: Path, agents: int):
    """The composition root with the AMI link off (we drive its reader ourselves) and agents loaded."""
    from aiohttp import web

    from callcentre.app import SERVICES, build_app
    from callcentre.config import load_config
    from callcentre.domain.acd import Agent

    env = {
        "CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp / 'ami.db'}",
        "CALLCENTRE_AGI__PORT": "0",
        "CALLCENTRE_AMI__ENABLED": "false",
        "CALLCENTRE_WEB__PORT": "0",
    }
    cfg = load_config(None, environ=env)
    app = build_app(cfg, web_ui=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    services = app[SERVICES]
    # Agents on the interfaces the captures use plus many others: the ACD's AMI hook maps channels to agents.
    ifaces = ["Local/agent1@agents", "Local/agent2@agents", "SIP/agent3"] + [f"PJSIP/bench{n}" for n in range(agents)]
    services.acd.load_agents(
        [Agent(str(10_000 + n), f"A{n}", f"a{n}", iface, frozenset({"repair"}), frozenset({"zh"}))
         for n, iface in enumerate(ifaces)],
        {}, {str(10_000 + n) for n in range(len(ifaces))},
    )
    return runner, services


async def _ingest(data: bytes, agents: int, over_socket: bool) -> dict[str, Any]:
    from callcentre.ami.link import MESSAGE_MAX_BYTES, AMILink, _SessionEnded
    from callcentre.app import _on_event

    with tempfile.TemporaryDirectory(prefix="cc-bench-ami-") as d:
        runner, services = await _app(Path(d), agents)
        sub = services.hub.subscribe("wallboard")
        try:
            counting = _Counting(_on_event(services))
            link = AMILink(services.cfg.ami, "unused", on_event=counting, on_login=_noop)
            server = None
            if over_socket:
                async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                    try:
                        w.write(data)
                        await w.drain()
                    except ConnectionError:
                        pass
                    finally:
                        w.close()

                server = await asyncio.start_server(serve, "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                t0 = time.perf_counter()
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MESSAGE_MAX_BYTES)
            else:
                reader = asyncio.StreamReader(limit=MESSAGE_MAX_BYTES)
                reader.feed_data(data)
                reader.feed_eof()
                writer = None
                t0 = time.perf_counter()
            try:
                await link._read_messages(reader)  # noqa: SLF001 - the link's own reader, without login
            except _SessionEnded:
                pass
            elapsed = time.perf_counter() - t0
            if writer is not None:
                writer.close()
            if server is not None:
                server.close()
                await server.wait_closed()
            published = sub._queue.qsize()  # noqa: SLF001 - how many frames reached the subscriber
            return {
                "seconds": elapsed,
                "events": counting.count,
                "events_per_s": round(counting.count / elapsed),
                "calls_tracked": len(services.tracker.records()),
                "hub_frames_to_wallboard": published,
            }
        finally:
            sub.close()
            await runner.cleanup()


async def _noop() -> None:
    return None


def run(repeat: int = 60, agents: int = 200, progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    data, events = stream(repeat)
    progress(f"  {len(data) / 1e6:.1f} MB of captured AMI, {events} events ({repeat} passes)")
    bare_s, bare_events = panoramisk_bare(data)
    progress(f"  panoramisk bare parser: {bare_events / bare_s:,.0f} events/s")
    memory = asyncio.run(_ingest(data, agents, over_socket=False))
    progress(f"  end to end (in memory): {memory['events_per_s']:,} events/s")
    sock = asyncio.run(_ingest(data, agents, over_socket=True))
    progress(f"  end to end (loopback socket): {sock['events_per_s']:,} events/s")
    return {
        "bytes": len(data),
        "events": events,
        "agents": agents,
        "panoramisk_bare": {"seconds": bare_s, "events": bare_events, "events_per_s": round(bare_events / bare_s)},
        "end_to_end_memory": memory,
        "end_to_end_socket": sock,
        "target_events_per_s": 30_000,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
