"""Benchmark of the pure call distributor (no sockets): prints figures and writes
bench/results-acd.json. Run: ``python bench/bench_acd.py`` from the repository root.

* one selection among 10,000 READY agents (target < 100 µs), the bare selection and the whole
  decision (enqueue -> MakeOffer);
* with 500 callers waiting and 200 agents: "agent becomes ready -> offer decided" and "caller
  enqueued" p50/p99 (the socket part is measured end to end with the simulator elsewhere);
* memory per waiting caller (tracemalloc).
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callcentre.config import ACDConfig  # noqa: E402
from callcentre.domain.acd import (  # noqa: E402
    Agent,
    Distributor,
    MakeOffer,
    PriorityLevel,
    WaitingCall,
    WithdrawReason,
    offers_in,
)
from callcentre.domain.ports import FakeClock  # noqa: E402

SKILLS = ["repair", "complaint", "fees"]
LANGS = ["zh", "en"]
RESULTS = Path(__file__).resolve().parent / "results-acd.json"


def quiet_logs() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING), cache_logger_on_first_use=False
    )


def json_logs_to_null() -> None:
    """Info logs rendered as JSON, written to an in-memory sink: the cost of logging itself."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=io.StringIO()),
        cache_logger_on_first_use=False,
    )


def pct(samples_ns: list[int], p: float) -> float:
    ordered = sorted(samples_ns)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
    return ordered[k] / 1000.0  # µs


def summary(samples_ns: list[int]) -> dict[str, float]:
    return {
        "n": len(samples_ns),
        "p50_us": round(pct(samples_ns, 50), 2),
        "p99_us": round(pct(samples_ns, 99), 2),
        "max_us": round(max(samples_ns) / 1000, 2),
        "mean_us": round(statistics.fmean(samples_ns) / 1000, 2),
    }


def make_agent(i: int, rng: random.Random) -> Agent:
    return Agent(
        f"a{i}",
        f"Agent {i}",
        f"agent{i}",
        f"PJSIP/{8000 + i}",
        frozenset(rng.sample(SKILLS, rng.randint(1, 2))),
        frozenset(rng.sample(LANGS, rng.randint(1, 2))),
        vip_capable=rng.random() < 0.2,
        senior=rng.random() < 0.1,
    )


def make_call(clock: FakeClock, n: int, rng: random.Random) -> WaitingCall:
    return WaitingCall(
        f"call-{n}",
        f"1700000000.{n}",
        "13800138000",
        n,
        rng.choice(LANGS + [None]),
        rng.choice(SKILLS + [None]),
        rng.choices(list(PriorityLevel), weights=[80, 10, 7, 3])[0],
        clock.now(),
        previous_agent_id=f"a{rng.randrange(200)}" if rng.random() < 0.3 else None,
        caller_name="Zhang San",
        unit="3-201",
    )


def bench_selection(agents: int = 10_000, rounds: int = 5_000) -> dict[str, object]:
    rng = random.Random(1)
    clock = FakeClock()
    d = Distributor(ACDConfig(), clock)
    for i in range(agents):
        d.add_agent(make_agent(i, rng))
        d.login(f"a{i}")
        clock.advance(0.001)
    d.take_history()
    pick_ns: list[int] = []
    decision_ns: list[int] = []
    for n in range(rounds):
        call = make_call(clock, n, rng)
        # the bare selection, on a queued call record
        t0 = time.perf_counter_ns()
        out = d.enqueue(call)
        t1 = time.perf_counter_ns()
        decision_ns.append(t1 - t0)
        offer = offers_in(out)[0]
        crec = d._calls[call.call_id]  # noqa: SLF001 - measuring the private step on purpose
        crec.offer_id, saved = None, crec.offer_id
        t0 = time.perf_counter_ns()
        picked = d.selector.pick_agent_for(crec)
        t1 = time.perf_counter_ns()
        crec.offer_id = saved
        assert picked is not None
        pick_ns.append(t1 - t0)
        d.withdraw(call.call_id, WithdrawReason.ABANDONED)  # agent back to READY in its place
        assert offer.agent_id
        d.take_history()
    return {"agents": agents, "selection": summary(pick_ns), "enqueue_to_offer": summary(decision_ns)}


def bench_loaded(waiting: int = 500, agents: int = 200, rounds: int = 5_000) -> dict[str, object]:
    """Every agent busy, ``waiting`` callers queued; an agent frees up -> an offer; a new caller joins."""
    rng = random.Random(2)
    clock = FakeClock()
    d = Distributor(ACDConfig(wrapup_seconds=0), clock)
    for i in range(agents):
        d.add_agent(make_agent(i, rng))
        d.login(f"a{i}")
    on_call: list[str] = []
    n = 0
    while len(on_call) < agents:
        for o in offers_in(d.enqueue(make_call(clock, n, rng))):
            d.on_answered(o.offer_id)
            on_call.append(o.offer_id)
        n += 1
    for _ in range(waiting):
        d.enqueue(make_call(clock, n, rng))
        n += 1
    assert d.waiting_count() == waiting
    ready_ns: list[int] = []
    enqueue_ns: list[int] = []
    for _ in range(rounds):
        clock.advance(0.01)
        ended = on_call.pop(rng.randrange(len(on_call)))
        t0 = time.perf_counter_ns()
        out = d.on_call_ended(ended)  # wrap-up 0: READY and offered at once
        t1 = time.perf_counter_ns()
        ready_ns.append(t1 - t0)
        offer = next(x.offer for x in out if isinstance(x, MakeOffer))
        d.on_answered(offer.offer_id)
        on_call.append(offer.offer_id)
        t0 = time.perf_counter_ns()
        d.enqueue(make_call(clock, n, rng))
        t1 = time.perf_counter_ns()
        enqueue_ns.append(t1 - t0)
        n += 1
        d.take_history()
    assert d.waiting_count() == waiting
    return {
        "waiting": waiting,
        "agents": agents,
        "ready_to_offer": summary(ready_ns),
        "enqueue_waiting": summary(enqueue_ns),
    }


def bench_memory(callers: int = 10_000) -> dict[str, object]:
    rng = random.Random(3)
    clock = FakeClock()
    d = Distributor(ACDConfig(), clock)
    calls = [make_call(clock, n, rng) for n in range(callers)]  # the WaitingCall values exist anyway
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for c in calls:
        d.enqueue(c)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    call_value = sys.getsizeof(calls[0])
    return {
        "callers": callers,
        "bytes_per_waiting_caller_in_distributor": round(grown / callers),
        "bytes_of_waiting_call_value_excluded": call_value,
    }


def main() -> None:
    machine = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
    }
    print("machine:", json.dumps(machine))
    quiet_logs()
    sel = bench_selection()
    print(f"selection among {sel['agents']} agents: {json.dumps(sel['selection'])}  (target < 100 µs)")
    print(f"enqueue -> offer among {sel['agents']} agents: {json.dumps(sel['enqueue_to_offer'])}")
    loaded = bench_loaded()
    print(
        f"{loaded['waiting']} waiting / {loaded['agents']} agents, agent ready -> offer: {json.dumps(loaded['ready_to_offer'])}"
    )
    print(
        f"{loaded['waiting']} waiting / {loaded['agents']} agents, enqueue: {json.dumps(loaded['enqueue_waiting'])}"
    )
    json_logs_to_null()
    loaded_logs = bench_loaded(rounds=2_000)
    print(
        f"same with info logs rendered as JSON, ready -> offer: {json.dumps(loaded_logs['ready_to_offer'])}"
    )
    quiet_logs()
    mem = bench_memory()
    print(
        f"memory per waiting caller: {mem['bytes_per_waiting_caller_in_distributor']} bytes"
        f" (+ the WaitingCall value itself, {mem['bytes_of_waiting_call_value_excluded']} bytes shallow)"
    )
    results = {
        "machine": machine,
        "selection_10000_agents": sel,
        "loaded_500_waiting_200_agents": loaded,
        "loaded_with_json_logs": loaded_logs,
        "memory": mem,
        "note": "pure domain only; the AMI/socket part of 'ready -> offer written' is measured with the simulator",
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
