"""The benchmarks run, with tiny sizes: their code works and their results have the promised shape.

No timing is asserted here (figures come from ``python -m bench`` on a quiet machine); only that each
benchmark measured what it claims (event counts, sessions completed, samples taken, calls reconciled).
"""

from __future__ import annotations

import json

import pytest

from bench import latency_ms, machine, percentile
from bench import __main__ as bench_main
from bench import bench_agi, bench_ami, bench_memory, bench_screenpop, bench_tickets, soak

LATENCY_KEYS = {"n", "p50_ms", "p99_ms", "max_ms", "mean_ms"}


def quiet(_msg: str) -> None:
    pass


def test_percentiles_and_latency_summary():
    assert percentile([], 99) == 0.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    s = latency_ms([0.001, 0.002, 0.003])
    assert set(s) == LATENCY_KEYS and s["n"] == 3 and s["max_ms"] == 3.0


def test_machine_description_is_complete_and_serialisable():
    m = machine()
    for key in ("date", "platform", "cpu_model", "cpu_count", "memory_bytes", "python", "packages"):
        assert key in m
    assert "panoramisk" in m["packages"]
    json.dumps(m)


def test_ami_stream_renumbers_calls_on_every_pass():
    one, events_one = bench_ami.stream(1)
    two, events_two = bench_ami.stream(2)
    assert events_one > 500 and events_two == 2 * events_one
    assert b"Event: Shutdown" not in one  # it would end the replayed AMI session
    assert one != two[: len(one)] or two[len(one):] != one  # the second pass has other ids


def test_ami_ingest_counts_every_event_end_to_end():
    r = bench_ami.run(repeat=1, agents=2, progress=quiet)
    assert r["panoramisk_bare"]["events"] == r["events"]
    for key in ("end_to_end_memory", "end_to_end_socket"):
        assert r[key]["events"] == r["events"]
        assert r[key]["calls_tracked"] > 10
        assert r[key]["events_per_s"] > 0


def test_fastagi_load_completes_every_session_against_both_servers():
    r = bench_agi.run(levels=(3,), think=(0.0, 0.002), ramp=0.01, progress=quiet)
    assert r["commands_per_session"] == 12
    level = r["levels"]["3"]
    for side in ("ours", "echo_floor"):
        assert level[side]["completed"] == 3 and level[side]["failed"] == 0
        assert level[side]["commands"] == 3 * 12
        assert set(level[side]["per_command_rtt"]) == LATENCY_KEYS
    assert "added_p99_ms" in level


def test_stack_measures_a_dial_and_a_screen_pop_per_agent():
    r = bench_screenpop.run(waiting=1, agents=1, progress=quiet)
    assert r["missing"] == 0 and r["websocket_clients"] == 1
    assert r["ready_to_dial_written"]["n"] == 1
    assert r["ready_to_screen_pop"]["n"] == 1


def test_tickets_are_created_and_counted_on_sqlite():
    r = bench_tickets.run(count=10, concurrency=3, pg_url=None, progress=quiet)
    for label in ("sequential", "concurrent_3"):
        assert r["sqlite"][label]["tickets"] == 10
        assert r["sqlite"][label]["latency"]["n"] == 10


def test_memory_per_waiting_call_is_measured():
    r = bench_memory.run(calls=3, traced=2, warmup=1, settle=0.05, progress=quiet)
    assert r["all_queued"] is True
    assert r["calls_waiting"] == 1 + 3 + 2
    assert r["tracemalloc_server_bytes_per_call"] > 0


def test_soak_slope_detects_growth_and_flatness():
    flat = [(t * 10.0, 1000) for t in range(10)]
    growing = [(t * 60.0, 1000 + t * 2048) for t in range(10)]
    assert soak.slope_per_minute(flat) == 0.0
    assert soak.slope_per_minute(growing) == pytest.approx(2048)
    assert soak.slope_per_minute(growing[:2]) == 0.0


def test_soak_runs_briefly_and_accounts_for_every_call(tmp_path):
    r = soak.run(minutes=0.01, rate=5.0, concurrency=3, speed=200.0, settle=0.1, progress=quiet,
                 server_log=tmp_path / "server.log")
    recon = r["reconciliation"]
    assert r["placed"] >= 1 and recon["calls_in"] == r["placed"]
    assert recon["accounted"] == recon["calls_in"] and recon["unaccounted"] == 0
    assert r["checks"]["every_call_accounted_for"] and r["checks"]["no_leaked_tasks"]
    # The server ran in its own process and stopped cleanly on SIGTERM.
    assert r["server_exit_status"] == 0 and r["checks"]["clean_stop"]
    assert r["server_rss_mib"]["baseline"] > 10 and r["tasks"]["baseline"] >= 1


def test_results_table_marks_misses():
    rows = bench_main.table({
        "acd_domain": {"agents": 10, "selection": {"p50_us": 1.0, "p99_us": 150.0}},
        "tickets": {"sqlite": {"sequential": {"per_s": 600, "latency": {"p99_ms": 2.0}}}, "postgresql": None},
    })
    met = {r[0]: r[4] for r in rows}
    assert met["one selection among 10 agents, p50 / p99 (µs)"] == "MISS"
    assert met["tickets, sqlite, sequential (per s; p99 ms)"] == "yes"
