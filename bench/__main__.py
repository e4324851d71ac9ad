"""``python -m bench``: run every benchmark, print a table, write bench/results.json.

Each figure is printed beside its reference (measured in the same run) and its target. ``--quick``
runs tiny sizes (a check that everything works; the figures mean nothing). The soak is separate:
``python -m bench.soak --minutes 30``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import REPO, machine

RESULTS = Path(__file__).resolve().parent / "results.json"
QUICK_RESULTS = Path(__file__).resolve().parent / "results-quick.json"  # never overwrites the real figures

FULL: dict[str, dict[str, Any]] = {
    "ami": {"repeat": 60, "agents": 200},
    "agi": {"levels": (100, 500, 1000), "think": (0.1, 1.0), "ramp": 1.0},
    "acd_domain": {"agents": 10_000, "rounds": 5_000},
    "stack": {"waiting": 500, "agents": 200},
    "tickets": {"count": 2000, "concurrency": 20},
    "memory": {"calls": 500, "traced": 100},
}
QUICK: dict[str, dict[str, Any]] = {
    "ami": {"repeat": 2, "agents": 5},
    "agi": {"levels": (5, 10), "think": (0.0, 0.01), "ramp": 0.05},
    "acd_domain": {"agents": 200, "rounds": 50},
    "stack": {"waiting": 5, "agents": 3},
    "tickets": {"count": 20, "concurrency": 4},
    "memory": {"calls": 5, "traced": 3},
}


def _acd_domain(agents: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """bench/bench_acd.py (pure domain): one selection among ``agents`` agents."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_acd  # noqa: PLC0415 - the existing script, reused as a module

    bench_acd.quiet_logs()
    sel = bench_acd.bench_selection(agents=agents, rounds=rounds)
    progress(f"  selection among {agents} agents: p50 {sel['selection']['p50_us']} µs, p99 {sel['selection']['p99_us']} µs")
    return sel


def run_all(sizes: dict[str, dict[str, Any]], only: set[str] | None, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import bench_agi, bench_ami, bench_memory, bench_screenpop, bench_tickets

    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("ami", "AMI ingest", lambda: bench_ami.run(**sizes["ami"], progress=progress)),
        ("agi", "FastAGI sessions", lambda: bench_agi.run(**sizes["agi"], progress=progress)),
        ("acd_domain", "call distribution, domain", lambda: _acd_domain(**sizes["acd_domain"], progress=progress)),
        ("stack", "call distribution and screen-pop, real stack",
         lambda: bench_screenpop.run(**sizes["stack"], progress=progress)),
        ("tickets", "tickets", lambda: bench_tickets.run(**sizes["tickets"], progress=progress)),
        ("memory", "memory per waiting call", lambda: bench_memory.run(**sizes["memory"], progress=progress)),
    ]
    out: dict[str, Any] = {}
    for key, title, step in steps:
        if only and key not in only:
            continue
        progress(f"[{key}] {title} ...")
        t = time.monotonic()
        try:
            out[key] = step()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"  FAILED: {out[key]['error']}")
        progress(f"  ({time.monotonic() - t:.1f}s)")
    return out


def _ok(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value >= target if higher_is_better else value <= target) else "MISS"


def table(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows of (figure, ours, reference, target, met)."""
    rows: list[tuple[str, str, str, str, str]] = []
    ami = r.get("ami", {})
    if "end_to_end_socket" in ami:
        ref = f"panoramisk bare parser {ami['panoramisk_bare']['events_per_s']:,}/s"
        for key, label in (("end_to_end_socket", "AMI ingest, loopback socket"), ("end_to_end_memory", "AMI ingest, in memory")):
            v = ami[key]["events_per_s"]
            rows.append((label + " (events/s)", f"{v:,}", ref, "≥ 30,000", _ok(v, 30_000, True)))
    agi = r.get("agi", {})
    for n, level in agi.get("levels", {}).items():
        ours, floor = level["ours"]["per_command_rtt"], level["echo_floor"]["per_command_rtt"]
        target = "< 10 ms" if n == "1000" else "-"
        met = _ok(ours["p99_ms"], 10.0, False) if n == "1000" else "-"
        rows.append((f"FastAGI {n} sessions, per command p50 / p99 (ms)", f"{ours['p50_ms']} / {ours['p99_ms']}",
                     f"bare echo {floor['p50_ms']} / {floor['p99_ms']}", target, met))
    dom = r.get("acd_domain", {})
    if "selection" in dom:
        p99 = dom["selection"]["p99_us"]
        rows.append((f"one selection among {dom['agents']:,} agents, p50 / p99 (µs)",
                     f"{dom['selection']['p50_us']} / {p99}", "-", "< 100 µs", _ok(p99, 100, False)))
    st = r.get("stack", {})
    if "ready_to_dial_written" in st:
        d = st["ready_to_dial_written"]
        rows.append((f"agent ready → EXEC Dial on the socket, {st['waiting']} waiting / {st['agents']} agents, p50 / p99 (ms)",
                     f"{d['p50_ms']} / {d['p99_ms']}", "domain decision: see bench_acd", "p99 < 20 ms", _ok(d["p99_ms"], 20, False)))
    if st.get("ready_to_screen_pop"):
        sp = st["ready_to_screen_pop"]
        rows.append((f"ready → screen-pop frame at the page, {st['websocket_clients']} pages, p50 / p99 (ms)",
                     f"{sp['p50_ms']} / {sp['p99_ms']}", f"ready → Dial {st['ready_to_dial_written']['p99_ms']} (p99)",
                     "p99 < 100 ms", _ok(sp["p99_ms"], 100, False)))
    tk = r.get("tickets", {})
    for db in ("sqlite", "postgresql"):
        res = tk.get(db)
        if not res:
            continue
        for label, fig in res.items():
            rows.append((f"tickets, {db}, {label} (per s; p99 ms)", f"{fig['per_s']}/s; {fig['latency']['p99_ms']}",
                         "-", "≥ 500/s", _ok(fig["per_s"], 500, True)))
    mem = r.get("memory", {})
    if "tracemalloc_server_bytes_per_call" in mem:
        v = mem["tracemalloc_server_bytes_per_call"]
        rows.append(("memory per waiting call, server (tracemalloc, KB)", f"{v / 1024:.1f}",
                     f"simulator {mem['tracemalloc_simulator_bytes_per_call'] / 1024:.1f}; RSS both "
                     f"{mem['rss_delta_bytes_per_call_server_and_simulator'] / 1024:.1f}", "< 100 KB",
                     _ok(v, 100 * 1024, False)))
    return rows


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows + [("figure", "ours", "reference", "target", "met")]) for i in range(5)]
    head = ("figure", "ours", "reference", "target", "met")
    for row in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Run every benchmark; see BENCHMARKS.md.")
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the code runs, figures mean nothing")
    p.add_argument("--only", action="append", choices=sorted(FULL), help="run only these (repeatable)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"results file (default {RESULTS}; with --quick, {QUICK_RESULTS.name})")
    a = p.parse_args(argv)
    if a.output is None:
        a.output = QUICK_RESULTS if a.quick else RESULTS
    sizes = QUICK if a.quick else FULL
    started = time.monotonic()
    desc = machine()
    print("machine:", json.dumps(desc))
    results = run_all(sizes, set(a.only) if a.only else None, print)
    rows = table(results)
    print()
    print_table(rows)
    doc = {
        "machine": desc,
        "quick": a.quick,
        "postgresql_url_set": bool(os.environ.get("CALLCENTRE_BENCH_PG_URL")),
        "seconds": round(time.monotonic() - started, 1),
        "sizes": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()} for k, v in sizes.items()},
        "results": results,
        "table": [dict(zip(("figure", "ours", "reference", "target", "met"), r, strict=True)) for r in rows],
    }
    a.output.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwritten {a.output}")
    return 1 if any("error" in v for v in results.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
