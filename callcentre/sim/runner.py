"""Load generator and demo driver: N scripted callers with a realistic mix, with progress output.

Used by ``callcentre simulate`` and ``callcentre demo``: our server's AMI client logs in to the
simulated AMI server started here, and every simulated call reaches our FastAGI server.
"""

from __future__ import annotations

import asyncio
import csv
import enum
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from callcentre.sim.ami_server import AMIServer
from callcentre.sim.pbx import SimPBX
from callcentre.sim.scripts import AgentScript, CallEnd, CallerInput, CallerScript, CallResult, Hangup, Record, Silence

log = structlog.get_logger(__name__)


class CallKind(enum.Enum):
    """What a simulated caller wants (digits follow the default IVR menu in config.IVRConfig)."""

    REPAIR = "repair"
    COMPLAINT = "complaint"
    SELF_SERVICE = "self_service"
    AGENT = "agent"
    UNKNOWN_CALLER = "unknown_caller"
    HANGUP = "hangup"


DEFAULT_MIX: dict[CallKind, float] = {
    CallKind.REPAIR: 0.30,
    CallKind.COMPLAINT: 0.15,
    CallKind.SELF_SERVICE: 0.20,
    CallKind.AGENT: 0.20,
    CallKind.UNKNOWN_CALLER: 0.05,
    CallKind.HANGUP: 0.10,
}

DEFAULT_AGENTS: tuple[AgentScript, ...] = (
    AgentScript("PJSIP/agent1", answer_after=3, talk_seconds=20),
    AgentScript("PJSIP/agent2", answer_after=6, talk_seconds=30),
    AgentScript("PJSIP/agent3", answer_after=None),
)


@dataclass
class RunSummary:
    """Totals of one run (printed at the end; also returned to the CLI)."""

    placed: int = 0
    finished: int = 0
    failed: int = 0
    fallback: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_end: Counter[str] = field(default_factory=Counter)
    cc_results: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def lines(self) -> list[str]:
        p50 = statistics.median(self.durations) if self.durations else 0.0
        p95 = sorted(self.durations)[int(0.95 * (len(self.durations) - 1))] if self.durations else 0.0
        return [
            f"calls placed {self.placed}, finished {self.finished}, failed {self.failed}, "
            f"fallback queue {self.fallback}, elapsed {self.elapsed:.1f}s",
            "by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_kind.items())),
            "ended: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_end.items())),
            "CC_RESULT: " + ", ".join(f"{k}={v}" for k, v in sorted(self.cc_results.items())),
            f"call duration (real seconds): p50 {p50:.2f}, p95 {p95:.2f}",
        ]


@dataclass(frozen=True)
class KnownOwner:
    """A caller the owner directory knows: their phone as they dial from it, and their unit."""

    phone: str
    building: str
    unit: str


def load_owners(csv_path: str | Path) -> list[KnownOwner]:
    """Phones and units from an owners CSV (docs/owners-csv.md), for realistic simulated callers."""
    out = []
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            building = (row.get("building") or "").strip().lstrip("0") or "0"
            unit = (row.get("unit") or "").strip().lstrip("0") or "0"
            if not (building.isdigit() and unit.isdigit()):
                continue
            for phone in (row.get("phones") or "").split(";"):
                digits = "".join(ch for ch in phone if ch.isdigit())
                if digits:
                    out.append(KnownOwner(digits, building, unit))
    return out


def make_caller(
    kind: CallKind, rng: random.Random, tech: str = "PJSIP", owners: Sequence[KnownOwner] = ()
) -> CallerScript:
    """A plausible caller of ``kind``; most are owners from ``owners`` when given (the IVR knows them).

    Inputs follow the default IVR (config.IVRConfig): an unknown caller skips the unit question of a
    repair or complaint by keying nothing, and keys in building and unit for self-service.
    """
    known = rng.choice(owners) if owners and rng.random() < 0.85 else None
    number = known.phone if known else f"13{rng.randint(0, 999999999):09d}"
    name = rng.choice(["Zhang San", "Li Si", "Wang Wu", "Zhao Liu", ""])
    building = known.building if known else str(rng.randint(1, 30))
    unit = known.unit if known else f"{rng.randint(1, 20)}{rng.randint(1, 4):02d}"
    skip_unit: list[CallerInput] = [] if known else [Silence()]
    inputs: list[CallerInput]
    hangup_after: float | None = None
    if kind is CallKind.REPAIR:
        inputs = ["2", *skip_unit, str(rng.randint(1, 6)), Record(rng.uniform(2, 6), "#"), Hangup()]
    elif kind is CallKind.COMPLAINT:
        inputs = ["3", *skip_unit, str(rng.randint(1, 8)), Record(rng.uniform(3, 8), "#"), Hangup()]
    elif kind is CallKind.SELF_SERVICE:
        inputs = ["1", f"{building}#", f"{unit}#", "1", Hangup()]
    elif kind is CallKind.AGENT:
        inputs = ["0", Silence(), rng.choice(["4", "5", "3"])]
        hangup_after = rng.uniform(60, 120)
    elif kind is CallKind.UNKNOWN_CALLER:
        number, name = "anonymous", ""
        inputs = [rng.choice(["2", "3"]), Silence(), "1", Record(2, "#"), Hangup()]
    else:
        inputs = [rng.choice([Hangup(), Silence()])]
        hangup_after = rng.uniform(1, 8)
    return CallerScript(number, name, channel_tech=tech, inputs=inputs, hangup_after=hangup_after,  # type: ignore[arg-type]
                        silences_before_giving_up=30)


def _pick(rng: random.Random, mix: Mapping[CallKind, float]) -> CallKind:
    kinds = list(mix)
    return rng.choices(kinds, weights=[mix[k] for k in kinds])[0]


async def run(
    ami_port: int,
    agi_host: str,
    agi_port: int,
    calls: int,
    concurrency: int,
    mix: Mapping[CallKind, float] | None = None,
    speed: float = 10.0,
    progress: Callable[[str], None] | None = print,
    *,
    ami_username: str = "callcentre",
    ami_secret: str = "secret",
    agents: Sequence[AgentScript] = DEFAULT_AGENTS,
    seed: int | None = None,
    ami_ready: Callable[[int], None] | None = None,
    call_gap_seconds: float = 0.5,
    owners: Sequence[KnownOwner] = (),
) -> RunSummary:
    """Start a simulated Asterisk (AMI server on 127.0.0.1:``ami_port``, 0 = any) and place
    ``calls`` scripted calls to the FastAGI server at ``agi_host:agi_port``, ``concurrency`` at a time.

    ``ami_ready`` is told the AMI port once listening (so a caller using port 0 can point our AMI
    client at it). ``speed`` divides every simulated duration.
    """
    if calls < 0 or concurrency < 1:
        raise ValueError("calls must be >= 0 and concurrency >= 1")
    mix = dict(mix or DEFAULT_MIX)
    if not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix needs at least one positive weight and no negative ones")
    rng = random.Random(seed)
    pbx = SimPBX(agi_host, agi_port, speed=speed)
    for agent in agents:
        pbx.add_agent(AgentScript(agent.interface, agent.answer_after, agent.talk_seconds, agent.busy))
    server = AMIServer(pbx, ami_username, ami_secret, port=ami_port)
    summary = RunSummary()
    started = time.monotonic()
    say = progress or (lambda _m: None)
    try:
        port = await server.start()
        if ami_ready is not None:
            ami_ready(port)
        say(f"simulated Asterisk AMI on 127.0.0.1:{port}; FastAGI target {agi_host}:{agi_port}")
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int, kind: CallKind) -> None:
            async with gate:
                summary.placed += 1
                summary.by_kind[kind.value] += 1
                try:
                    result: CallResult = await pbx.place_call(make_caller(kind, rng, owners=owners))
                except (OSError, ValueError, RuntimeError) as exc:
                    summary.failed += 1
                    log.warning("simulated call failed", call=i, error=str(exc))
                else:
                    summary.finished += 1
                    summary.by_end[result.ended.value] += 1
                    summary.cc_results[result.cc_result or "-"] += 1
                    summary.durations.append(result.duration)
                    if result.fallback_queue:
                        summary.fallback += 1
                    if result.ended in (CallEnd.AGI_FAILED, CallEnd.ERROR):
                        summary.failed += 1
                say(f"calls placed {summary.placed}/{calls}, finished {summary.finished}, failed {summary.failed}")

        async with asyncio.TaskGroup() as tg:
            for i in range(calls):
                tg.create_task(one(i, _pick(rng, mix)))
                await asyncio.sleep(pbx.sleep_for(call_gap_seconds))
    finally:
        await pbx.aclose()
        await server.stop()
        summary.elapsed = time.monotonic() - started
    for line in summary.lines():
        say(line)
    return summary
