"""Faults on the real PBX: ``core restart now``, a kicked AMI session, SIGTERM mid-call and with Asterisk down.

What the real Asterisk 20 does (seen here, and what these tests rely on):

* ``core restart now`` re-executes Asterisk in place: the same PID, every channel hung up, AMI clients
  get ``Event: Shutdown`` with ``Restart: True`` and then EOF; it is fully booted again in ~1-2 s.
  Globals set with Setvar are gone (the dialplan is read again).
* ``manager kick session <fd>`` closes one AMI session (the TCP connection) and nothing else: calls go on.
  ``module reload manager`` does NOT drop sessions.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from tests.pbx.conftest import PBX, SIGTERM_EXIT_BOUND

REPAIR_LONG = ["wait:2", "dtmf:2", "wait:2", "dtmf:1", "wait:14", "dtmf:#", "wait:25", "hangup"]
REPAIR = ["wait:2", "dtmf:2", "wait:2", "dtmf:1", "wait:7", "play:hello-world", "dtmf:#", "wait:25", "hangup"]
PERSON = ["wait:2", "dtmf:0"]


async def log_after(pbx: PBX, start: int, event: str, limit: float, **fields: Any) -> dict[str, Any]:
    """The first server log line at index >= ``start`` with this event (and fields)."""
    end = time.monotonic() + limit
    while True:
        for line in pbx.server.lines[start:]:
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        if time.monotonic() > end:
            raise AssertionError(f"no {event!r} after line {start} within {limit} s:\n" + "\n".join(pbx.server.raw[-40:]))
        await asyncio.sleep(0.05)


async def until(pred, limit: float, what: str, every: float = 0.25):
    end = time.monotonic() + limit
    last = None
    while True:
        ok, last = await pred()
        if ok:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {limit} s (last seen: {last})")
        await asyncio.sleep(every)


async def api(session, path: str) -> Any:
    r = await session.get(path)
    assert r.status in (200, 503), (path, r.status, await r.text())
    return await r.json()


def agents_by_name(body: dict[str, Any]) -> dict[str, str]:
    return {a["name"].removeprefix("Agent "): a["state"] for a in body["agents"]}


async def wait_booted(pbx: PBX, limit: float = 20.0) -> float:
    t0 = time.monotonic()
    while "fully booted" not in (await pbx.ast.acli("core waitfullybooted", 5)).lower():
        if time.monotonic() - t0 > limit:
            raise AssertionError("asterisk did not come back")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


def server_errors(pbx: PBX) -> list[dict[str, Any]]:
    """Error lines of the server log (asserted empty); its warnings are printed for the record."""
    warnings = sorted({str(ln.get("event")) for ln in pbx.server.lines if ln.get("level") == "warning"})
    print("server warnings:", warnings)
    return [ln for ln in pbx.server.lines if ln.get("level") in ("error", "critical")]


# --------------------------------------------------------------------------- core restart now

@pytest.mark.pbx_world(agents={"agent1": "answer:1:120", "agent2": "never"},
                       config={"acd": {"wrapup_seconds": 1}},
                       users=[("boss", "supervisor", {"name": "Boss"})])
async def test_core_restart_now_with_calls_up_leaves_no_phantoms_and_the_next_call_works(pbx: PBX):
    boss = await pbx.login("boss")
    try:
        # A talks to an agent; B is offered to the other agent (whose phone only rings); C is in the menu
        await pbx.call("13800138000", PERSON, hold=120)

        async def one_on_call():
            st = agents_by_name(await api(boss, "/api/agents"))
            return "on_call" in st.values(), st
        await until(one_on_call, 20, "an agent on a call with A")
        await pbx.call("13800138001", PERSON, hold=120)

        async def b_ringing():
            st = agents_by_name(await api(boss, "/api/agents"))
            q = (await api(boss, "/api/queue"))["queue"]
            return "ringing" in st.values() and len(q) == 1, (st, q)
        await until(b_ringing, 20, "B waiting with an agent's phone ringing")
        await pbx.call("13912345602", ["wait:1"], hold=120)
        await pbx.hotline_leg("13912345602")
        before = await pbx.channels()
        assert len(before) >= 6, [c.get("Channel") for c in before]
        health = await api(boss, "/health")
        assert health["fastagi"]["active_sessions"] == 3, health
        print(f"\nbefore the restart: {len(before)} channels, {health['ami']['open_calls']} calls tracked by the server")

        pid = pbx.ast.proc.pid
        mark = len(pbx.server.lines)
        t0 = time.monotonic()
        await pbx.ast.acli("core restart now")
        await log_after(pbx, mark, "ami link lost", 10)
        up = await log_after(pbx, mark, "ami link up", 10)
        t_up = time.monotonic() - t0
        resync = await log_after(pbx, mark, "ami resynchronised", 10)
        t_resync = time.monotonic() - t0
        booted = await wait_booted(pbx)
        # the re-exec keeps the process: same PID, still running
        assert pbx.ast.proc.poll() is None and pbx.ast.proc.pid == pid
        await pbx.ami.reconnect()
        print(f"core restart now: ami link up after {t_up:.2f} s, resynchronised after {t_resync:.2f} s "
              f"(booted {booted:.2f} s after the CLI returned); resync saw {resync.get('channels')} channels; "
              f"version {up.get('version')}")
        assert resync["channels"] == 0, resync

        # no phantoms: no waiting caller, no agent stuck ringing or on a call, no session, no tracked call
        async def clean():
            st = agents_by_name(await api(boss, "/api/agents"))
            q = (await api(boss, "/api/queue"))["queue"]
            h = await api(boss, "/health")
            ok = (not q and not ({"ringing", "on_call"} & set(st.values()))
                  and h["fastagi"]["active_sessions"] == 0 and h["ami"]["open_calls"] == 0 and h["ami"]["connected"])
            return ok, (st, q, h["fastagi"], h["ami"])
        st, _q, _f, ami = await until(clean, 10, "the server's picture after the restart")
        assert h_ok(ami), ami
        print("after the restart:", st)

        # the next calls work: a repair makes its ticket, a caller who asks for a person is answered
        await pbx.set_phone("agent2", "answer:1:30")
        await pbx.set_phone("agent1", "answer:1:30")
        mark_ev = len(pbx.ami.events)
        await asyncio.gather(pbx.call("13800138000", REPAIR), pbx.call("13800138001", PERSON, hold=30))
        leg = await pbx.ami.wait_for(lambda e: e.get("Event") == "AGIExecStart"
                                     and e.get("CallerIDNum") == "13800138000", 15, start=mark_ev)
        answered = await pbx.ami.wait_for(
            lambda e: e.get("Event") == "DialEnd" and e.get("DialStatus") == "ANSWER"
            and "@cc-test-phones" in e.get("DestChannel", ""), 40, start=mark_ev)
        assert answered["CallerIDNum"] == "13800138001", answered
        tickets = await pbx.eventually_tickets(1, 60)
        assert [t.call_uniqueid for t in tickets] == [leg["Uniqueid"]], tickets
    finally:
        await boss.close()
    assert not server_errors(pbx), server_errors(pbx)


def h_ok(ami: dict[str, Any]) -> bool:
    return bool(ami["connected"]) and ami["reconnects"] >= 1


# --------------------------------------------------------------------------- AMI session kicked

@pytest.mark.pbx_world(agents={"agent1": "answer:1:90"}, users=[("boss", "supervisor", {"name": "Boss"})])
async def test_a_kicked_ami_session_reconnects_resyncs_and_the_calls_in_progress_go_on(pbx: PBX):
    boss = await pbx.login("boss")
    try:
        await pbx.call("13800138001", PERSON, hold=60)  # talks to agent1

        async def on_call():
            st = agents_by_name(await api(boss, "/api/agents"))
            return st.get("agent1") == "on_call", st
        await until(on_call, 20, "agent1 on a call")
        await pbx.call("13800138000", REPAIR_LONG)  # reports a repair
        rec = await pbx.ami.wait_for(lambda e: e.get("Event") == "AGIExecStart" and e.get("CallerIDNum") == "13800138000"
                                     and e.get("Command", "").startswith("RECORD FILE"), 30)

        # kick the server's AMI session (and only it) while the caller records
        connected = await pbx.ast.acli("manager show connected")
        fds = [ln.split()[4] for ln in connected.splitlines() if ln.split()[:1] == ["callcentre"]]
        assert len(fds) == 1, connected
        mark = len(pbx.server.lines)
        t0 = time.monotonic()
        out = await pbx.ast.acli(f"manager kick session {fds[0]}")
        print("\nkick:", out.strip())
        await log_after(pbx, mark, "ami link lost", 10)
        await log_after(pbx, mark, "ami link up", 10)
        resync = await log_after(pbx, mark, "ami resynchronised", 10)
        print(f"kicked: link up again and resynchronised {time.monotonic() - t0:.2f} s later; {resync}")
        assert resync["channels"] == 6, resync  # A with agent1 (4 Local legs) and the recording caller (2)
        assert resync["status"] == 6 and resync["queue_entries"] == 0, resync  # nobody in the fallback queue

        # nothing was lost: agent1 still on the call, its caller still there, the repair gets its ticket
        h = await api(boss, "/health")
        assert h["ami"]["connected"] and h["ami"]["reconnects"] >= 1, h
        assert agents_by_name(await api(boss, "/api/agents"))["agent1"] == "on_call"
        chans = await pbx.channels()
        assert h["ami"]["open_calls"] == len(chans), (h["ami"], [c.get("Channel") for c in chans])
        tickets = await pbx.eventually_tickets(1, 40)
        assert [t.call_uniqueid for t in tickets] == [rec["Uniqueid"]], tickets
        read_back = [ln for ln in pbx.agi_debug() if "ticket-created" in ln and "STREAM FILE" in ln]
        assert read_back, "the ticket number was not read back"
        # and after the kick the server still sees what happens: agent1's call ends, agent1 is free again
        await pbx.ami.action("Hangup", Channel="/^Local\\/agent1@cc-test-phones-.*/", Cause="16")

        async def ready():
            st = agents_by_name(await api(boss, "/api/agents"))
            return st.get("agent1") in ("wrap_up", "ready"), st
        await until(ready, 15, "agent1 released after the call ended")
    finally:
        await boss.close()
    assert not server_errors(pbx), server_errors(pbx)


# --------------------------------------------------------------------------- SIGTERM mid-call

@pytest.mark.pbx_world()
async def test_sigterm_while_a_caller_records_new_calls_fall_back_the_caller_gets_the_ticket_exit_0(pbx: PBX):
    await pbx.call("13800138000", REPAIR_LONG)
    rec = await pbx.ami.wait_for(lambda e: e.get("Event") == "AGIExecStart" and e.get("CallerIDNum") == "13800138000"
                                 and e.get("Command", "").startswith("RECORD FILE"), 30)
    proc = pbx.server.proc
    assert proc is not None
    mark_log, mark_ev = len(pbx.server.lines), len(pbx.ami.events)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    await log_after(pbx, mark_log, "fastagi server stopped accepting", 10)

    # a new caller is not taken: res_agi cannot connect, AGISTATUS=FAILURE, the fallback queue
    await pbx.call("13912345602", [], hold=30)
    # (no AGIExecStart: res_agi never connected) the hotline leg's AGISTATUS is FAILURE
    late = await pbx.ami.wait_for(lambda e: e.get("Event") == "VarSet" and e.get("Variable") == "AGISTATUS"
                                  and e.get("Channel", "").startswith("Local/4008001234@cc-test-trunk-")
                                  and e.get("Uniqueid") != rec["Uniqueid"], 15, start=mark_ev)
    assert late["Value"] == "FAILURE", late
    assert late["CallerIDNum"] == "13912345602", late
    # Asterisk's own log: the fallback context ran the fallback queue for this caller. (Here the queue's
    # members' state interfaces are PJSIP/agentN and this Asterisk has no chan_pjsip, so app_queue logs
    # "Unable to join queue" (joinempty = unavailable,invalid) and the caller goes on to voicemail.)
    chan = late["Channel"]
    queue_app = f'Queue("{chan}", "hotline-fallback'

    async def queued():
        full = pbx.asterisk_log()
        return queue_app in full, full[-2000:]
    await until(queued, 10, "the fallback queue run for the new caller")
    await pbx.expect_logged(f"fallback for {chan}: AGISTATUS=FAILURE")

    # the caller in progress finishes: ticket, and its number read back after SIGTERM
    rc = await asyncio.wait_for(proc.wait(), 60)
    exit_s = time.monotonic() - t0
    print(f"\nSIGTERM mid-recording: exited {rc} after {exit_s:.1f} s")
    assert rc == 0, "\n".join(pbx.server.raw[-30:])
    tickets = await pbx.tickets()
    assert [t.call_uniqueid for t in tickets] == [rec["Uniqueid"]], tickets
    assert tickets[0].kind == "repair" and tickets[0].owner_id is not None
    events = [ln.get("event") for ln in pbx.server.lines]
    assert "message recorded" in events[mark_log:], "SIGTERM came after the recording ended"
    chan = rec["Channel"]
    read_back = [ln for ln in pbx.agi_debug() if f"<{chan}>AGI Rx << STREAM FILE" in ln and "ticket-created" in ln]
    assert read_back, "the caller in progress did not hear the ticket number"
    set_done = [ln for ln in pbx.agi_debug() if f"<{chan}>AGI Rx << SET VARIABLE CC_RESULT" in ln and "done" in ln]
    assert set_done, "CC_RESULT=done was not set for the caller in progress"
    assert events[-1] == "stopped", events[-5:]
    assert not server_errors(pbx), server_errors(pbx)


# --------------------------------------------------------------------------- SIGTERM with Asterisk down

@pytest.mark.pbx_world(users=[("boss", "supervisor", {"name": "Boss"})])
async def test_sigterm_while_asterisk_is_down_and_the_ami_link_retries_exits_promptly(pbx: PBX):
    boss = await pbx.login("boss")
    ws = await boss.ws_connect("/ws/wallboard", headers={"Origin": pbx.web_url})
    try:
        snapshot = await ws.receive_json(timeout=5)
        assert snapshot.get("type") == "snapshot", snapshot
        mark = len(pbx.server.lines)
        await asyncio.to_thread(pbx.ast.stop)
        await log_after(pbx, mark, "ami link lost", 10)
        await log_after(pbx, mark, "ami connect failed", 10)
        await asyncio.sleep(2)  # a few reconnect rounds (0.1-1 s backoff in this tier)
        h = await api(boss, "/health")
        assert h["ami"]["connected"] is False and h["ok"] is False, h
        rc, exit_s = await pbx.sigterm()
        print(f"\nSIGTERM with Asterisk down and a wallboard open: exited {rc} after {exit_s:.2f} s")
        assert rc == 0, "\n".join(pbx.server.raw[-30:])
        assert exit_s < SIGTERM_EXIT_BOUND, exit_s
        # the wallboard's websocket was closed by the server (snapshots may still be queued before it)
        kinds = []
        while True:
            msg = await ws.receive(timeout=5)
            kinds.append(msg.type.name)
            if msg.type.name != "TEXT":
                break
        assert kinds[-1] in ("CLOSE", "CLOSED", "CLOSING"), kinds
    finally:
        await ws.close()
        await boss.close()
    assert pbx.server.lines[-1].get("event") == "stopped", pbx.server.raw[-5:]
    assert not server_errors(pbx), server_errors(pbx)



# --------------------------------------------------------------------------- SIGTERM after a busy test run

@pytest.mark.pbx_world(agents={"agent1": "never"}, users=[("boss", "supervisor", {"name": "Boss"})])
async def test_sigterm_after_every_call_is_hung_up_mid_way_exits_promptly(pbx: PBX):
    """What the fixture does after each test, with a session of each kind in progress: hang every
    channel up at once, then SIGTERM. Every FastAGI session must notice its hang-up (no session left
    to wait the 75 s grace for) and the process must be gone well within the bound."""
    boss = await pbx.login("boss")
    try:
        await pbx.call("13800138000", PERSON, hold=120)  # waits while agent1's phone rings
        await pbx.call("13800138001", ["wait:2", "dtmf:2", "wait:2", "dtmf:1"], hold=120)  # records, never ends
        await pbx.call("13912345602", [], hold=120)  # silent in the menu

        async def all_busy():
            st = agents_by_name(await api(boss, "/api/agents"))
            h = await api(boss, "/health")
            recording = any(e.get("Event") == "AGIExecStart" and e.get("CallerIDNum") == "13800138001"
                            and e.get("Command", "").startswith("RECORD FILE") for e in pbx.ami.events)
            return st.get("agent1") == "ringing" and recording and h["fastagi"]["active_sessions"] == 3, (st, h["fastagi"])
        await until(all_busy, 30, "a caller waiting, one recording, one in the menu")

        t0 = time.monotonic()
        await pbx.ami.action("Hangup", Channel="/.*/", Cause="16")
        await pbx.no_channels(10)

        async def no_sessions():
            h = await api(boss, "/health")
            return h["fastagi"]["active_sessions"] == 0 and h["ami"]["open_calls"] == 0, h
        await until(no_sessions, 10, "every FastAGI session ended after the hang-ups", every=0.05)
        ended = time.monotonic() - t0
    finally:
        await boss.close()
    rc, exit_s = await pbx.sigterm()
    print(f"\nall channels hung up: sessions ended {ended:.2f} s later; SIGTERM -> exit {rc} in {exit_s:.2f} s")
    assert rc == 0 and exit_s < SIGTERM_EXIT_BOUND, (rc, exit_s)
    assert not server_errors(pbx), server_errors(pbx)
