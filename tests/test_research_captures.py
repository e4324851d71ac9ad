"""The issue-12 research captures (queue_log, recording, transfers): readable, listed, and saying what
docs/research-recording-transfers.md and docs/queue-log.md say they say.

These facts were seen on the real Asterisk 20.20.1 (tools/record_captures.py); if the captures are
recorded again and a fact changes, the documents must change with it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.captures import FIXTURES, ami_messages, read_capture

TOOL = Path(__file__).resolve().parents[1] / "tools" / "record_captures.py"
README = (FIXTURES / "README-captures.md").read_text()


def load_tool():
    spec = importlib.util.spec_from_file_location("record_captures_research", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def agi_lines(name: str) -> list[tuple[str, bytes]]:
    return [(ln.tag, ln.data) for ln in read_capture(name)]


def after_note(name: str, note: bytes, n: int) -> list[bytes]:
    """The first ``n`` lines from Asterisk after the note that starts with ``note``."""
    lines = agi_lines(name)
    i = next(i for i, (tag, data) in enumerate(lines) if tag == "--" and data.startswith(note))
    return [data for tag, data in lines[i + 1:] if tag == "<<"][:n]


def env(name: str) -> dict[str, str]:
    out = {}
    for tag, data in agi_lines(name):
        if tag == "<<" and data.startswith(b"agi_"):
            k, _, v = data.decode().rstrip("\n").partition(": ")
            out[k] = v
    return out


def events(name: str, event: str) -> list[dict[str, str]]:
    return [m for m in ami_messages(name) if m.get("Event") == event]


def test_every_queue_and_extra_session_file_is_readable_and_listed() -> None:
    tool = load_tool()
    for qlog_file, ami_file in [(a, b) for _, a, b in tool.QUEUE_SCENARIOS.values()]:
        assert (FIXTURES / qlog_file).read_bytes().endswith(b"\n"), qlog_file
        assert read_capture(ami_file), ami_file  # (logger reload sends nothing on AMI: notes only)
        assert qlog_file in README and ami_file in README
    for files in tool.EXTRA_SESSIONS.values():
        for extra in files.values():
            assert any(ln.tag == "<<" for ln in read_capture(extra)), extra
            assert extra in README, extra
    assert set(tool.QUEUE_SCENARIOS).isdisjoint(tool.SCENARIOS)


def test_redirect_and_blind_transfer_end_the_dial_with_result_0_then_hangup() -> None:
    for name, action in (("transfer-redirect-agi.txt", b"AMI Redirect"), ("transfer-blind-agi.txt", b"AMI BlindTransfer")):
        assert after_note(name, action, 2) == [b"200 result=0\n", b"HANGUP\n"], name
        tail = [data for tag, data in agi_lines(name) if tag == "<<"][-5:]
        assert tail[0] == b"511 Command Not Permitted on a dead channel or intercept routine\n"
        assert tail[1] == b"200 result=1 (ANSWER)\n"  # DIALSTATUS still says the first agent answered


def test_the_transferred_caller_comes_back_to_the_fastagi_server_on_the_same_channel() -> None:
    for first, second in (("transfer-redirect-agi.txt", "transfer-redirect-agi2.txt"),
                          ("transfer-blind-agi.txt", "transfer-blind-agi2.txt")):
        a, b = env(first), env(second)
        assert (a["agi_uniqueid"], a["agi_channel"]) == (b["agi_uniqueid"], b["agi_channel"])
        assert b["agi_callerid"] == "13800138000"
        assert after_note(second, b"AMI Hangup", 1) == [b"200 result=-1\n"]  # its own Dial to agent T2 held
    # the target's priority 1 is skipped: the channel is moved there inside EXEC, the PBX increments after AGI()
    for name, exten in (("transfer-redirect-ami.txt", "7001"), ("transfer-blind-ami.txt", "7002")):
        steps = [(m["Priority"], m["Application"]) for m in events(name, "Newexten")
                 if m.get("Context") == "capture-xfer" and m.get("Exten") == exten]
        assert steps[:2] == [("1", "Dial"), ("2", "AGI")], (name, steps)
        assert ("1", "NoOp") not in steps
    blind = events("transfer-blind-ami.txt", "BlindTransfer")
    assert len(blind) == 1 and blind[0]["Result"] == "Success" and blind[0]["Extension"] == "7002"
    assert blind[0]["TransfereeChannel"] == env("transfer-blind-agi.txt")["agi_channel"]


def test_attended_transfer_keeps_the_first_dial_and_optimises_the_consultation_away() -> None:
    att = events("transfer-attended-ami.txt", "AttendedTransfer")
    assert len(att) == 1 and (att[0]["Result"], att[0]["DestType"]) == ("Success", "Bridge")
    assert att[0]["TransfereeChannel"] == env("transfer-attended-agi.txt")["agi_channel"]
    assert events("transfer-attended-ami.txt", "LocalOptimizationBegin")
    # the first session's Dial only returns when the caller hangs up, still naming agent T1
    assert after_note("transfer-attended-agi.txt", b"AMI Hangup Local/xferatt", 2) == [b"200 result=-1\n", b"HANGUP\n"]
    assert b"agentt1" in [d for t, d in agi_lines("transfer-attended-agi.txt") if t == "<<"][-1]
    assert env("transfer-attended-agi2.txt")["agi_uniqueid"] != env("transfer-attended-agi.txt")["agi_uniqueid"]


def test_recording_facts() -> None:
    notes = {name: [d for t, d in agi_lines(name) if t == "--"] for name in (
        "recording-ami-action-agi.txt", "recording-dialplan-agi.txt", "recording-readonly-dir-agi.txt",
        "recording-disk-full-agi.txt")}
    # AMI MixMonitor: Start at once, Stop only for StopMixMonitor; the files hold the 4 s in between
    assert len(events("recording-ami-action-ami.txt", "MixMonitorStart")) == 1
    assert len(events("recording-ami-action-ami.txt", "MixMonitorStop")) == 1
    assert sum(b"header finished" in n for n in notes["recording-ami-action-agi.txt"]) == 3
    # a MixMonitor nobody stops sends no MixMonitorStop and finishes its file only when the channel is gone
    for name in ("recording-dialplan", "recording-readonly-dir", "recording-disk-full"):
        assert not events(f"{name}-ami.txt", "MixMonitorStop"), name
        assert len(events(f"{name}-ami.txt", "MixMonitorStart")) == 1, name
    dial = notes["recording-dialplan-agi.txt"]
    closed = dial.index(b"the script closes the FastAGI session")
    assert b"header NOT finished" in dial[closed - 1] and b"header finished" in dial[closed + 2]
    # read-only target: MixMonitorStart and AMI Success all the same, no file, the call goes on
    ro = notes["recording-readonly-dir-agi.txt"]
    assert any(n.startswith(b"MixMonitor answered Success") for n in ro)
    assert any(b"still in the bridge" in n for n in ro) and any(n.endswith(b"recro.wav: missing") for n in ro)
    # full disk: the call goes on; the files keep what fitted, with a finished header
    full = notes["recording-disk-full-agi.txt"]
    assert any(b"10 s later: the caller is still in the bridge" in n for n in full)
    assert any(b"No space left on device" in n for n in full)
