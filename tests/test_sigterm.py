"""SIGTERM with calls in progress, against the real ``callcentre serve`` process.

The server runs as a subprocess (as systemd or a container runtime runs it) with CALLCENTRE_*
settings pointing at the simulated Asterisk of this test and a temporary database. While a caller
is recording a repair request, the process gets SIGTERM: it must stop taking new calls (the next
caller lands in the dialplan's fallback queue), let the caller in progress finish (their ticket is
made and its number read back), and exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal

from callcentre.sim.scripts import CallEnd, CallerScript, Record
from tests.conftest import AMI_SECRET, REPO, stack_environ
from tests.serverproc import ServerProcess

EXIT_BOUND_SECONDS = 15.0  # well under the 75 s grace (agi.shutdown_grace_seconds) for calls in progress


async def test_sigterm_refuses_new_calls_finishes_calls_in_progress_and_exits_0(tmp_path):
    from callcentre.config import DatabaseConfig
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.models import TicketRow
    from sqlalchemy import select

    pbx = SimPBX(speed=50.0, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp_path / "rec")
    ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    env.update(stack_environ(tmp_path, await ami_server.start()))
    env.update({
        "CALLCENTRE_LOGGING__FORMAT": "json", "CALLCENTRE_LOGGING__LEVEL": "info", "CALLCENTRE_WEB__HOST": "127.0.0.1",
        "CALLCENTRE_WEB_SESSION_KEY": "sigterm-test-key-0123456789", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
    })
    url = env["CALLCENTRE_DATABASE__URL"]
    await upgrade(url, progress=None)
    engine = create_engine(DatabaseConfig(url=url))
    await import_owners(session_factory(engine), REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")

    recording = asyncio.Event()

    def on_event(fields) -> None:
        d = dict(fields)
        if d.get("Event") == "AGIExecStart" and d.get("Command", "").startswith("RECORD FILE"):
            recording.set()

    pbx.subscribe(on_event)
    server = ServerProcess(env, str(tmp_path))
    try:
        await server.start()
        listening = await server.wait_log("fastagi listening", 30)
        pbx.agi_port = int(listening["port"])
        await server.wait_log("ami resynchronised", 10)

        # a caller is in the middle of recording a repair request when SIGTERM arrives
        in_progress = asyncio.ensure_future(pbx.place_call(CallerScript("13800138000", inputs=["2", "1", Record(40)])))
        await asyncio.wait_for(recording.wait(), 10)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        await server.wait_log("fastagi server stopped accepting", 10)

        # a new caller is not taken: the dialplan sends them to the fallback queue (a person)
        late = await asyncio.wait_for(pbx.place_call(CallerScript("13912345602", inputs=["2"])), 10)
        assert late.agi_status == "FAILURE" and late.fallback_queue
        assert late.ended in (CallEnd.AGI_FAILED, CallEnd.FALLBACK_ABANDONED)

        # the caller in progress finishes: the ticket is made and its number read back
        done = await asyncio.wait_for(in_progress, 15)
        assert done.cc_result == "done" and not done.fallback_queue, done
        assert any("ticket-created" in c for c in done.commands)
        events = [line.get("event") for line in server.lines]
        assert events.index("stopping: no new calls; waiting for calls in progress") < events.index("message recorded"), \
            "SIGTERM came after the recording ended: the test did not catch a call in progress"

        # and the process exits 0 within the bound
        rc = await asyncio.wait_for(server.proc.wait(), EXIT_BOUND_SECONDS)
        assert rc == 0, "\n".join(server.raw[-30:])
        assert any(line.get("event") == "stopped" for line in server.lines)
        assert not any(line.get("level") in ("error", "critical") for line in server.lines), [
            line for line in server.lines if line.get("level") in ("error", "critical")]
        async with session_factory(engine)() as s:
            tickets = list((await s.execute(select(TicketRow))).scalars())
        assert [t.call_uniqueid for t in tickets] == [done.uniqueid]
        assert tickets[0].kind == "repair" and tickets[0].owner_id is not None
    finally:
        await server.close()
        await engine.dispose()
        await pbx.aclose()
        await ami_server.stop()
