"""FastAGI: N concurrent sessions over real sockets, and the time the server adds per command.

Every server runs in its own process, started the way ``callcentre serve`` starts the server
(bench/server.py: malloc arenas limited before any thread, logging from the configuration, the real
:class:`~callcentre.agi.server.FastAGIServer`, ``gc.freeze()`` after start-up), with an event-loop
lag and garbage-collection monitor inside it:

* **protocol**: the FastAGI server alone with an IVR-like handler written against
  :class:`~callcentre.agi.channel.AGIChannel` (answer, a variable read, greeting, menus with digits,
  a variable write, a ticket read-out, the result): the protocol layer the IVR uses, no database;
* **IVR**: ``callcentre serve`` itself (SQLite, every service, the web part, call distribution; AMI
  off) running the real :class:`~callcentre.domain.ivr.HotlineIVR`: the caller is looked up in the
  owner directory by caller ID, chooses repair and a category, records a message, and a ticket is
  created, committed and read back;
* **echo** (the floor): a bare asyncio server that sends the very same command lines (recorded from
  one real session of each of the two) and reads the replies, doing nothing else.

The load client (this process) plays Asterisk: it sends the ``agi_*`` header, answers each command
with res_agi's reply text, and for STREAM FILE / GET DATA / RECORD FILE first waits a random "prompt"
time (the think time, compressed from seconds to ``think`` to make load). Per command it measures the
time from writing a reply to reading the next command: the round trip plus what the server does.

Levels are interleaved: at each level the protocol server, its echo, the IVR server and its echo run
one after the other (A B A B), and the whole sequence of levels is repeated ``repeats`` times (a
"pass"). While one runs, the other server processes are stopped (SIGSTOP; ``--no-pause`` leaves them
running). "added p99" is ours p99 minus the echo's p99 at the same level in the same pass. The servers'
event-loop lag (p99, max) and GC pauses are reported for the same time window as each run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import REPO, latency_ms, no_collection, quiet_logs, raise_fd_limit

PROTOCOL_SCRIPT = "bench-protocol"
IVR_SCRIPT = "hotline"
TARGET_ADDED_P99_MS = 5.0
TARGET_LEVEL = 1000
_THINKING = ("STREAM FILE", "GET DATA", "RECORD FILE")
# Owners with one unit on their phone (examples/owners.csv): the IVR knows them at once.
CANDIDATE_CALLERS = (
    "13800138001", "13720000801", "13800138000", "18622221201", "13555551502", "15818001801", "13102020202",
    "15005050505", "15210031003", "14711061106", "13316011601", "15904050405", "18807090709", "13210021002",
)


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


# ---------------------------------------------------------------- server processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """``python -m bench.server KIND`` in a child process; its loop monitor's figures after stop()."""

    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    stats_path: Path
    log_path: Path
    stats: dict[str, Any] | None = None

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system, every thread), from /proc; 0 if unknown."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            self.stats = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.stats = {"lag": [], "gc": []}
        return self.stats


def server_environ(tmp: Path, agi_port: int, web_port: int, log_level: str) -> dict[str, str]:
    return {
        "CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp / 'callcentre.db'}",
        "CALLCENTRE_AGI__PORT": str(agi_port),
        "CALLCENTRE_AGI__MAX_SESSIONS": "5000",
        "CALLCENTRE_AMI__ENABLED": "false",
        "CALLCENTRE_WEB__HOST": "127.0.0.1",
        "CALLCENTRE_WEB__PORT": str(web_port),
        "CALLCENTRE_WEB__SESSION_KEY": "bench-session-key-0123456789abcdef0123456789",
        "CALLCENTRE_IVR__RECORD_DIR": str(tmp / "recordings"),
        "CALLCENTRE_PROMPTS__LOCAL_DIR": str(REPO / "prompts"),
        "CALLCENTRE_LOGGING__LEVEL": log_level,
    }


async def start_server(kind: str, tmp: Path, env: dict[str, str], port: int, extra: list[str] | None = None,
                       timeout: float = 60.0) -> ServerProcess:  # noqa: ASYNC109
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    stats_path = tmp / f"{kind}-{port}-stats.json"
    log_path = tmp / f"{kind}-{port}.log"
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")  # cProfile every server process (slows them down)
    if profile_dir:
        extra = [*(extra or []), "--profile", str(Path(profile_dir) / f"{kind}.prof")]
        if os.environ.get("BENCH_PROFILE_WINDOW"):  # only while the benchmark measures (SIGUSR1..SIGUSR2)
            extra.append("--profile-window")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "bench.server", kind, "--stats", str(stats_path), *(extra or [])],
            cwd=tmp, env={**inherited, "PYTHONPATH": str(REPO), **env}, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(kind, port, proc, stats_path, log_path)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with status {proc.returncode}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return server
        except OSError:
            await asyncio.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{kind} server did not listen on {port} within {timeout:.0f} s")


async def prepare_database(tmp: Path, env: dict[str, str]) -> list[str]:
    """Migrate, import the example owners; the candidate callers the directory knows as one owner."""
    from callcentre.config import load_config
    from callcentre.domain import callerid
    from callcentre.owners_import import import_owners
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.repo import SqlDirectory

    cfg = load_config(None, environ=env)
    await upgrade(cfg.database.url, progress=None)
    engine = create_engine(cfg.database)
    try:
        sf = session_factory(engine)
        await import_owners(sf, REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
        directory = SqlDirectory(sf)
        c = cfg.centre
        single = []
        for number in CANDIDATE_CALLERS:
            normalised = callerid.normalise(number, country_code=c.country_code, trunk_prefix=c.trunk_prefix,
                                            intl_prefix=c.international_prefix, area_code=c.area_code)
            if normalised and len(await directory.find_by_phone(normalised)) == 1:
                single.append(number)
    finally:
        await engine.dispose()
    if not single:
        raise RuntimeError("no caller of the example owners is known as exactly one owner")
    return single


# ---------------------------------------------------------------- load client (this process)

def _header(n: int, port: int, script: str, caller: str) -> bytes:
    fields = [
        ("agi_network", "yes"), ("agi_network_script", script), ("agi_request", f"agi://127.0.0.1:{port}/{script}"),
        ("agi_channel", f"PJSIP/owner-phone-{n:08x}"), ("agi_language", "en"), ("agi_type", "PJSIP"),
        ("agi_uniqueid", f"1700000000.{n}"), ("agi_version", "20.20.1"), ("agi_callerid", caller),
        ("agi_calleridname", "Zhang San"), ("agi_callingpres", "0"), ("agi_callingani2", "0"),
        ("agi_callington", "0"), ("agi_callingtns", "0"), ("agi_dnid", "8000"), ("agi_rdnis", "unknown"),
        ("agi_context", "hotline-in"), ("agi_extension", "8000"), ("agi_priority", "2"), ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""), ("agi_threadid", str(140185524098752 + n)),
    ]
    return ("".join(f"{k}: {v}\n" for k, v in fields) + "\n").encode()


class _Caller:
    """res_agi's replies for one session; GET DATA answers with ``digits`` in turn, then times out."""

    def __init__(self, n: int, digits: list[str]) -> None:
        self.n = n
        self.digits = list(digits)

    def reply(self, line: str) -> tuple[str, bool]:
        upper = line.upper()
        if upper.startswith("GET DATA"):
            if self.digits:
                return f"200 result={self.digits.pop(0)}\n", True
            return "200 result= (timeout)\n", True
        if upper.startswith("STREAM FILE"):
            return "200 result=0 endpos=10720\n", True
        if upper.startswith("RECORD FILE"):
            return "200 result=0 (timeout) endpos=16000\n", True
        if upper.startswith("GET VARIABLE"):
            return f"200 result=1 (1700000000.{self.n})\n", False
        if upper.startswith("SET VARIABLE"):
            return "200 result=1\n", False
        return "200 result=0\n", False


@dataclass(frozen=True)
class Workload:
    """What a kind of session sends: the script, the callers' numbers, the digits they press."""

    script: str
    callers: tuple[str, ...]
    digits: tuple[str, ...]


PROTOCOL = Workload(PROTOCOL_SCRIPT, ("13800138000",), ("2", "2"))


async def _session(n: int, port: int, work: Workload, think: tuple[float, float], rng: random.Random,
                   rtts: list[float], firsts: list[float], record: list[str] | None,
                   steps: dict[str, list[float]] | None = None) -> bool:
    """One session; ``steps`` (if given) gets each time under the step it followed: "07 after STREAM
    FILE" is the time from the reply to the session's 7th command to the next command."""
    caller = _Caller(n, list(work.digits))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_header(n, port, work.script, work.callers[n % len(work.callers)]))
        sent = time.perf_counter()
        first = True
        step = "00 after the agi_* header"
        index = 0
        while True:
            raw = await reader.readline()
            got = time.perf_counter()
            if not raw:
                return not first
            (firsts if first else rtts).append(got - sent)
            if steps is not None:
                steps.setdefault(step, []).append(got - sent)
            first = False
            line = raw.decode().rstrip("\n")
            index += 1
            step = f"{index:02d} after {' '.join(line.split()[:2])}"
            if record is not None:
                record.append(line)
            text, thinking = caller.reply(line)
            if thinking and think[1] > 0:
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


async def load(port: int, work: Workload, sessions: int, think: tuple[float, float], ramp: float,
               first_id: int) -> dict[str, Any]:
    rng = random.Random(sessions + first_id)
    rtts: list[float] = []
    firsts: list[float] = []
    steps: dict[str, list[float]] = {}

    async def one(n: int) -> bool:
        await asyncio.sleep(ramp * n / max(1, sessions))
        return await _session(first_id + n, port, work, think, rng, rtts, firsts, None, steps)

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
        # Where a tail comes from: the three steps of a session with the highest p99 (see _session).
        "slowest_steps": sorted(({"step": k, **latency_ms(v)} for k, v in steps.items()),
                                key=lambda x: -x["p99_ms"])[:3],
        "seconds": round(elapsed, 2),
    }


async def record_lines(port: int, work: Workload, session_id: int) -> list[str]:
    lines: list[str] = []
    await _session(session_id, port, work, (0.0, 0.0), random.Random(0), [], [], lines)
    return lines


# ---------------------------------------------------------------- the benchmark

def _server_of(side: str) -> str:
    """The server process a run's side talks to: ``protocol_echo`` and ``ivr_echo`` share the echo."""
    return "echo" if side.endswith("_echo") else side


async def _run(levels: tuple[int, ...], think: tuple[float, float], ramp: float, repeats: int, with_ivr: bool,
               log_level: str, progress: Callable[[str], None], pause_others: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"think_seconds": list(think), "ramp_seconds": ramp, "repeats": repeats,
                           "log_level": log_level, "paused_other_servers": pause_others, "passes": []}
    windows: list[tuple[int, int, str, float, float]] = []  # (pass, level, side, start, end)
    runs: dict[tuple[int, int, str], dict[str, Any]] = {}
    from bench.server import LoopMonitor, window_stats

    client = LoopMonitor()  # this load client's own loop: its stalls delay the replies it times
    client.start()
    with tempfile.TemporaryDirectory(prefix="cc-bench-agi-") as d:
        tmp = Path(d)
        servers: dict[str, ServerProcess] = {}
        try:
            proto_port = free_port()
            env = server_environ(tmp, proto_port, free_port(), log_level)
            servers["protocol"] = await start_server("fastagi", tmp, env, proto_port)
            sides: dict[str, tuple[int, Workload]] = {"protocol": (proto_port, PROTOCOL)}
            lines = {PROTOCOL_SCRIPT: await record_lines(proto_port, PROTOCOL, 0)}
            if with_ivr:
                ivr_port = free_port()
                ivr_env = server_environ(tmp, ivr_port, free_port(), log_level)
                callers = await prepare_database(tmp, ivr_env)
                servers["ivr"] = await start_server("serve", tmp, ivr_env, ivr_port)
                ivr = Workload(IVR_SCRIPT, tuple(callers), ("2", "1"))
                sides["ivr"] = (ivr_port, ivr)
                lines[IVR_SCRIPT] = await record_lines(ivr_port, ivr, 0)
                if not any(ln.upper().startswith("RECORD FILE") for ln in lines[IVR_SCRIPT]):
                    raise RuntimeError(f"the IVR session did not reach the recording: {lines[IVR_SCRIPT]}")
            out["commands_per_session"] = {script: len(seq) for script, seq in lines.items()}
            lines_path = tmp / "lines.json"
            lines_path.write_text(json.dumps(lines), encoding="utf-8")
            echo_port = free_port()
            servers["echo"] = await start_server("echo", tmp, {}, echo_port,
                                                 ["--lines", str(lines_path), "--port", str(echo_port)])
            order: list[tuple[str, int, Workload]] = []
            for side, (port, work) in sides.items():
                order += [(side, port, work), (f"{side}_echo", echo_port, work)]
            next_id = 1
            for p in range(1, repeats + 1):
                for n in levels:
                    for side, port, work in order:
                        # Only the measured server runs; the others are stopped (SIGSTOP) meanwhile. With the
                        # IVR server (SQLite, every service) left running while the protocol row was measured,
                        # one pass in five added 7 ms at p99 with neither loop stalled to match (BENCHMARKS.md);
                        # with it stopped, no pass did. Each side keeps its own background work.
                        if pause_others:
                            for name, srv in servers.items():
                                srv.proc.send_signal(signal.SIGCONT if name == _server_of(side) else signal.SIGSTOP)
                            await asyncio.sleep(0.3)
                        cpu_before = {name: srv.cpu_seconds() for name, srv in servers.items()}
                        # The load client collects between runs, never during one (bench.no_collection).
                        with no_collection():
                            start = time.monotonic()
                            res = await load(port, work, n, think, ramp, next_id)
                        windows.append((p, n, side, start, time.monotonic()))
                        # What every server process used meanwhile: the one measured, and any other
                        # (background work of an idle server competes for the machine's two cores).
                        res["servers_cpu_s"] = {name: round(srv.cpu_seconds() - cpu_before[name], 3)
                                                for name, srv in servers.items()}
                        runs[(p, n, side)] = res
                        next_id += n
                        rtt = res["per_command_rtt"]
                        progress(f"  pass {p} {side:<14} {n:>5} sessions: p50 {rtt['p50_ms']} ms, p99 {rtt['p99_ms']} ms, "
                                 f"max {rtt['max_ms']} ms; {res['completed']} completed")
                        await asyncio.sleep(0.2)
        finally:
            for s in servers.values():
                s.proc.send_signal(signal.SIGCONT)
            stats = {name: s.stop() for name, s in servers.items()}
            await client.stop()
        for name, s in servers.items():
            if s.proc.returncode not in (0, None):
                progress(f"  {name} server exited with status {s.proc.returncode}")
    client_stats = client.figures()
    for p in range(1, repeats + 1):
        levels_out: dict[str, Any] = {}
        for n in levels:
            level: dict[str, Any] = {}
            for p_, n_, side, start, end in windows:
                if (p_, n_) != (p, n):
                    continue
                level[side] = {**runs[(p, n, side)], "server": window_stats(stats.get(_server_of(side), {}), start, end),
                               "client": window_stats(client_stats, start, end)}
            for side in ("protocol", "ivr"):
                if side in level:
                    a = level[side]["per_command_rtt"]
                    b = level[f"{side}_echo"]["per_command_rtt"]
                    level[f"{side}_added_p50_ms"] = round(a["p50_ms"] - b["p50_ms"], 3)
                    level[f"{side}_added_p99_ms"] = round(a["p99_ms"] - b["p99_ms"], 3)
            levels_out[str(n)] = level
        out["passes"].append({"pass": p, "levels": levels_out})
    top = str(max(levels))
    for side in ("protocol", "ivr"):
        added = [ps["levels"][top].get(f"{side}_added_p99_ms") for ps in out["passes"]]
        added = [a for a in added if a is not None]
        if added:
            out[f"{side}_added_p99_ms_at_{top}"] = added
            out[f"{side}_met"] = all(a < TARGET_ADDED_P99_MS for a in added) and int(top) >= TARGET_LEVEL
    out["target_added_p99_ms"] = TARGET_ADDED_P99_MS
    out["target_level"] = TARGET_LEVEL
    out["top_level"] = int(top)
    return out


def run(levels: tuple[int, ...] = (100, 500, 1000), think: tuple[float, float] = (0.1, 1.0), ramp: float = 1.0,
        repeats: int = 1, with_ivr: bool = True, log_level: str = "warning",
        progress: Callable[[str], None] = print, pause_others: bool = True) -> dict[str, Any]:
    """``repeats`` passes over ``levels``; see the module docstring."""
    quiet_logs()
    raise_fd_limit(2 * max(levels) + 512)
    return asyncio.run(_run(tuple(levels), think, ramp, repeats, with_ivr, log_level, progress, pause_others))


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.bench_agi", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="passes over the levels (default 5)")
    p.add_argument("--levels", default="100,500,1000", help="concurrent sessions per level (default 100,500,1000)")
    p.add_argument("--no-ivr", action="store_true", help="the protocol-only server and its echo only")
    p.add_argument("--no-pause", action="store_true",
                   help="leave the other servers running during each run (by default every server but the "
                        "one measured is stopped with SIGSTOP meanwhile)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.add_argument("--json", type=Path, default=None, help="write the result here too")
    a = p.parse_args(argv)
    result = run(levels=tuple(int(x) for x in a.levels.split(",")), repeats=a.repeats, with_ivr=not a.no_ivr,
                 pause_others=not a.no_pause,
                 log_level=a.log_level)
    text = json.dumps(result, indent=2)
    if a.json is not None:
        a.json.write_text(text + "\n", encoding="utf-8")
    top = a.levels.split(",")[-1]
    for side in ("protocol", "ivr"):
        key = f"{side}_added_p99_ms_at_{top}"
        if key in result:
            print(f"{side}: added p99 at {top} sessions per pass: {result[key]} ms "
                  f"(target < {TARGET_ADDED_P99_MS} ms in every pass: {'met' if result[f'{side}_met'] else 'MISSED'})")
            for ps in result["passes"]:
                slow = ps["levels"][top][side]["slowest_steps"][0]
                print(f"  pass {ps['pass']}: the slowest step, {slow['step']}: p50 {slow['p50_ms']} ms, "
                      f"p99 {slow['p99_ms']} ms")
                stall = ps["levels"][top][side]["server"].get("longest_stall")
                if stall:
                    print(f"  pass {ps['pass']}: the server's longest loop stall {stall['lag_ms']} ms = "
                          f"{stall['cpu_ms']} ms running, {stall['queued_ms']} ms waiting for a CPU "
                          f"(GC {stall['gc_ms']} ms; {stall['minor_faults']} page faults, "
                          f"{stall['major_faults']} major; preempted {stall['preempted']} times)")
                for who in (side, f"{side}_echo"):
                    c = ps["levels"][top][who]["client"].get("longest_stall")
                    if c:
                        print(f"    the load client's longest stall during {who}: {c['lag_ms']} ms "
                              f"({c['cpu_ms']} ms running, {c['queued_ms']} ms waiting, GC {c['gc_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
