"""``python -m bench``: run every benchmark, print a table, write bench/results.json.

Each figure is printed beside its reference (measured in the same run) and its target. ``--quick``
runs tiny sizes (a check that everything works; the figures mean nothing). The soak is separate:
``python -m bench.soak --minutes 30``. ``--agi-repeats 5`` runs the FastAGI levels five times (the
target is met only if it is met in every pass).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import REPO, load_average, machine

RESULTS = Path(__file__).resolve().parent / "results.json"
QUICK_RESULTS = Path(__file__).resolve().parent / "results-quick.json"  # never overwrites the real figures

FULL: dict[str, dict[str, Any]] = {
    # 240 passes over the captures: 345,600 events, 3-5 s a round, so the live push (at most once a
    # second while the picture changes) sends its frames during every round, not only between them.
    "ami": {"repeat": 240, "agents": 200, "rounds": 3},
    "agi": {"levels": (100, 500, 1000), "think": (0.1, 1.0), "ramp": 1.0, "repeats": 1},
    "acd_domain": {"agents": 10_000, "rounds": 5_000, "waiting": 500, "loaded_agents": 200},
    "stack": {"waiting": 500, "agents": 200, "background_rate": 10.0},
    "tickets": {"count": 2000, "concurrency": 20},
    "memory": {"calls": 500, "traced": 100},
    # The backlog the FastAGI benchmark's five passes leave open (1,600 tickets a pass at 500 sessions
    # and 1,000 at 1,000): the escalation pass then runs every 15 s in the middle of calls.
    "escalation": {"open_tickets": 6400, "passes": 3},
}
QUICK: dict[str, dict[str, Any]] = {
    "ami": {"repeat": 1, "agents": 5, "rounds": 1},
    "agi": {"levels": (5, 10), "think": (0.0, 0.01), "ramp": 0.05, "repeats": 1},
    "acd_domain": {"agents": 200, "rounds": 50, "waiting": 20, "loaded_agents": 10},
    "stack": {"waiting": 5, "agents": 3, "background_rate": 2.0},
    "tickets": {"count": 20, "concurrency": 4},
    "memory": {"calls": 5, "traced": 3},
    "escalation": {"open_tickets": 20, "passes": 1},
}


def _acd_domain(agents: int, rounds: int, waiting: int, loaded_agents: int,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """bench/bench_acd.py (pure domain): one selection among ``agents`` agents, and the loaded case
    (``waiting`` callers queued, ``loaded_agents`` agents all busy; one frees up -> an offer)."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_acd  # noqa: PLC0415 - the existing script, reused as a module

    bench_acd.quiet_logs()
    sel = bench_acd.bench_selection(agents=agents, rounds=rounds)
    progress(f"  selection among {agents} agents: p50 {sel['selection']['p50_us']} µs, p99 {sel['selection']['p99_us']} µs")
    loaded = bench_acd.bench_loaded(waiting=waiting, agents=loaded_agents, rounds=rounds)
    r = loaded["ready_to_offer"]
    progress(f"  {waiting} waiting / {loaded_agents} agents, agent ready -> offer: p50 {r['p50_us']} µs, p99 {r['p99_us']} µs")
    return {**sel, "loaded": loaded}


def run_all(sizes: dict[str, dict[str, Any]], only: set[str] | None, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import bench_agi, bench_ami, bench_escalation, bench_memory, bench_screenpop, bench_tickets

    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("ami", "AMI ingest", lambda: bench_ami.run(**sizes["ami"], progress=progress)),
        ("agi", "FastAGI sessions", lambda: bench_agi.run(**sizes["agi"], progress=progress)),
        ("acd_domain", "call distribution, domain", lambda: _acd_domain(**sizes["acd_domain"], progress=progress)),
        ("stack", "call distribution and screen-pop, real stack",
         lambda: bench_screenpop.run(**sizes["stack"], progress=progress)),
        ("tickets", "tickets", lambda: bench_tickets.run(**sizes["tickets"], progress=progress)),
        ("memory", "memory per call in the IVR and waiting", lambda: bench_memory.run(**sizes["memory"], progress=progress)),
        ("escalation", "escalation pass over open tickets",
         lambda: bench_escalation.run(**sizes["escalation"], progress=progress)),
    ]
    out: dict[str, Any] = {}
    for key, title, step in steps:
        if only and key not in only:
            continue
        before = load_average()
        progress(f"[{key}] {title} ... (load average {before})")
        t = time.monotonic()
        try:
            out[key] = step()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"  FAILED: {out[key]['error']}")
        # The machine is shared: what else ran is part of every figure.
        out[key]["load_average"] = {"before": before, "after": load_average()}
        progress(f"  ({time.monotonic() - t:.1f}s; load average after: {out[key]['load_average']['after']})")
    return out


def _ok(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value >= target if higher_is_better else value <= target) else "MISS"


def table(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows of (figure, ours, reference, target, met)."""
    rows: list[tuple[str, str, str, str, str]] = []
    ami = r.get("ami", {})
    if "ours_events_per_s" in ami:
        eps, ratio = ami["ours_events_per_s"], ami["ratio_ours_to_reference"]
        rows.append(("AMI ingest end to end with live push (events/s; median of rounds)", f"{eps:,}",
                     f"panoramisk parse+dispatch {ami['reference_events_per_s']:,}/s",
                     f"≥ {ami['target_events_per_s']:,}", _ok(eps, ami["target_events_per_s"], True)))
        rows.append(("AMI ingest, ours / panoramisk parse+dispatch (same run)", f"x{ratio}",
                     f"{ami['wallboard_frames']} wallboard frames received; bare parser "
                     f"{ami['panoramisk_bare']['events_per_s']:,}/s", f"≥ x{ami['target_ratio']}",
                     _ok(ratio, ami["target_ratio"], True)))
    agi = r.get("agi", {})
    for ps in agi.get("passes", []):
        for n, level in ps["levels"].items():
            for side, label in (("protocol", "FastAGI protocol"), ("ivr", "FastAGI real IVR (SQLite)")):
                if side not in level:
                    continue
                ours, floor = level[side]["per_command_rtt"], level[f"{side}_echo"]["per_command_rtt"]
                added = level[f"{side}_added_p99_ms"]
                lag = level[side]["server"]
                client = level[side].get("client", {})
                at_target = int(n) == agi.get("target_level")
                rows.append((
                    f"{label}, pass {ps['pass']}, {n} sessions: p50 / p99 (ms); added p99; server lag p99/max; "
                    "load client's lag max",
                    f"{ours['p50_ms']} / {ours['p99_ms']}; +{added}; lag {lag['lag_p99_ms']}/{lag['lag_max_ms']}; "
                    f"client {client.get('lag_max_ms', '-')}",
                    f"echo {floor['p50_ms']} / {floor['p99_ms']}"
                    + (f"; our slowest step {level[side]['slowest_steps'][0]['step']}: p99 "
                       f"{level[side]['slowest_steps'][0]['p99_ms']}" if level[side].get("slowest_steps") else ""),
                    f"added p99 < {agi['target_added_p99_ms']:g} ms" if at_target else "-",
                    _ok(added, agi["target_added_p99_ms"], False) if at_target else "-"))
    top = agi.get("top_level")
    for side, label in (("protocol", "FastAGI protocol"), ("ivr", "FastAGI real IVR (SQLite)")):
        added = agi.get(f"{side}_added_p99_ms_at_{top}")
        if added:
            rows.append((f"{label}: added p99 at {top} sessions, each of {len(added)} passes (ms)",
                         ", ".join(f"{a:g}" for a in added), "echo at the same level, same pass",
                         f"< {agi['target_added_p99_ms']:g} ms in every pass",
                         "yes" if agi.get(f"{side}_met") else "MISS"))
    dom = r.get("acd_domain", {})
    if "selection" in dom:
        p99 = dom["selection"]["p99_us"]
        rows.append((f"one selection among {dom['agents']:,} agents, p50 / p99 (µs)",
                     f"{dom['selection']['p50_us']} / {p99}", "-", "< 100 µs", _ok(p99, 100, False)))
    if "loaded" in dom:
        ld = dom["loaded"]
        rr = ld["ready_to_offer"]
        rows.append((f"agent ready -> offer decided, {ld['waiting']} waiting / {ld['agents']} agents (domain), p50 / p99 (µs)",
                     f"{rr['p50_us']} / {rr['p99_us']}", f"caller enqueued {ld['enqueue_waiting']['p99_us']} (p99)", "-", "-"))
    st = r.get("stack", {})
    if "ready_to_full_card" in st:
        fc, bc, dl = st["ready_to_full_card"], st["ready_to_basic_card"], st["ready_to_dial_written"]
        lag = st.get("server", {})
        traffic = f"{st['background_rate_per_s']:g} calls/s"
        rows.append((f"ready (HTTP) -> FULL owner card at the page, {st['websocket_clients']} pages, {st['waiting']} waiting, "
                     f"{traffic} arriving, p50 / p99 (ms)",
                     f"{fc['p50_ms']} / {fc['p99_ms']} (max {fc['max_ms']})",
                     f"basic card {bc['p99_ms']}, Dial {dl['p99_ms']} (p99); lag p99/max "
                     f"{lag.get('lag_p99_ms')}/{lag.get('lag_max_ms')}; client lag max "
                     f"{st.get('client', {}).get('lag_max_ms')}", "p99 < 50 ms", _ok(fc["p99_ms"], 50, False)))
        rows.append((f"ready (HTTP) -> EXEC Dial on the socket, {st['waiting']} waiting / {st['agents']} agents, p50 / p99 (ms)",
                     f"{dl['p50_ms']} / {dl['p99_ms']}", "domain decision: acd_domain loaded row", "p99 < 20 ms",
                     _ok(dl["p99_ms"], 20, False)))
    tk = r.get("tickets", {})
    for db in ("sqlite", "postgresql"):
        res = tk.get(db)
        if not res:
            continue
        for label, fig in res.items():
            p99 = fig["latency"]["p99_ms"]
            met = _ok(fig["per_s"], 2000, True) == "yes" and _ok(p99, 20, False) == "yes"
            rows.append((f"tickets, {db}, {label} (per s; p99 ms)", f"{fig['per_s']}/s; {p99}",
                         "-", "≥ 2,000/s, p99 < 20 ms", "yes" if met else "MISS"))
    mem = r.get("memory", {})
    for key, label, target in (("in_ivr", "memory per concurrent IVR call", 30), ("waiting", "memory per waiting call", None)):
        m = mem.get(key)
        if not m:
            continue
        v = m["tracemalloc_server_bytes_per_call"]
        rows.append((f"{label}, server (tracemalloc, KiB)", f"{v / 1024:.1f}",
                     f"simulator {m['tracemalloc_simulator_bytes_per_call'] / 1024:.1f}; RSS both "
                     f"{m['rss_delta_bytes_per_call_server_and_simulator'] / 1024:.1f}",
                     f"< {target} KiB" if target else "-", _ok(v, target * 1024, False) if target else "-"))
    esc = r.get("escalation", {})
    if "passes" in esc:
        passes = esc["passes"]
        rows.append((f"escalation pass over {esc['open_tickets']:,} open tickets (pages of {esc['page_size']}): "
                     "pass ms; longest loop hold ms",
                     f"{', '.join(str(p['pass_ms']) for p in passes)}; {esc['loop_held_max_ms']}",
                     f"CPU {', '.join(str(p['cpu_ms']) for p in passes)} ms", "-", "-"))
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
    p.add_argument("--agi-repeats", type=int, default=None,
                   help="FastAGI passes over the levels (default 1; the target is 'every run of 5': use 5)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"results file (default {RESULTS}; with --quick, {QUICK_RESULTS.name})")
    a = p.parse_args(argv)
    if a.output is None:
        a.output = QUICK_RESULTS if a.quick else RESULTS
    sizes = {k: dict(v) for k, v in (QUICK if a.quick else FULL).items()}
    if a.agi_repeats is not None:
        if a.agi_repeats < 1:
            p.error("--agi-repeats must be at least 1")
        sizes["agi"]["repeats"] = a.agi_repeats
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
