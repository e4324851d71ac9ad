#!/usr/bin/env python3
"""Measure how fast a second node becomes leader (callcentre/cluster/leader.py) on a real PostgreSQL.

    source .ci/start-postgres
    python tools/measure_leader_takeover.py --kills 5 --partitions 3

* kill: two ``python -m callcentre.cluster.leader`` processes with the production timings; the leader
  is SIGKILLed; seconds from the kill to the other's "elected" line. Then the killed one is started
  again as the follower and the next round kills the other.
* partition: two electors in this process, the leader connected through a proxy that starts to drop
  every byte without closing anything (a pulled cable); seconds from the cut until the leader stepped
  down, and until the other node was elected (the database's lease, idle_session_timeout, frees the
  lock). The step-down must come first.

Prints one line per round and a summary (min / median / max). Uses CALLCENTRE_TEST_PG_URL (or --url).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from callcentre.cluster.config import ClusterConfig  # noqa: E402
from callcentre.cluster.leader import PgLeaderElector  # noqa: E402
from callcentre.cluster.pg import asyncpg_dsn  # noqa: E402
from tests.cluster_support import PartitionProxy  # noqa: E402


class Proc:
    def __init__(self, url: str, node: str, role: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcentre.cluster.leader", "--url", url, "--role", role, "--node", node],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})

    def wait(self, event: str) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg["event"] == event:
                return msg
        raise RuntimeError(f"exited before {event}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def measure_kills(url: str, rounds: int, role: str) -> list[float]:
    figures = []
    leader = Proc(url, "n0", role)
    leader.wait("elected")
    follower = Proc(url, "n1", role)
    follower.wait("started")
    try:
        for i in range(rounds):
            # the follower has tried at least once; a random phase against its 2 s retry cycle
            time.sleep(2.0 + random.uniform(0.0, 2.0))
            killed_at = time.time()
            leader.proc.send_signal(signal.SIGKILL)
            took = follower.wait("elected")
            figures.append(took["time"] - killed_at)
            print(f"kill {i + 1}: follower elected {figures[-1]:.2f} s after SIGKILL (term {took['term']})", flush=True)
            leader.kill()
            leader, follower = follower, Proc(url, f"n{i + 2}", role)
            follower.wait("started")
    finally:
        leader.kill()
        follower.kill()
    return figures


async def measure_partitions(url: str, rounds: int, cfg: ClusterConfig, role: str) -> list[tuple[float, float]]:
    figures = []
    for i in range(rounds):
        proxy = PartitionProxy.for_url(url)
        await proxy.start()
        seen: dict[str, float] = {}

        def callbacks(node: str, seen: dict[str, float] = seen):
            async def elected(term: int) -> None:
                seen.setdefault(f"{node}-elected", time.monotonic())

            async def demoted() -> None:
                seen.setdefault(f"{node}-demoted", time.monotonic())
            return {"on_elected": elected, "on_demoted": demoted}

        timing = {"retry_seconds": cfg.retry_seconds, "heartbeat_seconds": cfg.heartbeat_seconds,
                  "heartbeat_timeout_seconds": cfg.heartbeat_timeout_seconds, "lease_seconds": cfg.lease_seconds}
        a = PgLeaderElector(asyncpg_dsn(proxy.url_through(url)), role, node="a", **callbacks("a"), **timing)
        b = PgLeaderElector(asyncpg_dsn(url), role, node="b", **callbacks("b"), **timing)
        try:
            await a.start()
            await a.wait_for(lambda e: e.is_leader, 15)
            await b.start()
            await b.wait_for(lambda e: e.status()["state"] == "follower", 15)
            await asyncio.sleep(1.0)
            cut = time.monotonic()
            proxy.partition()
            await b.wait_for(lambda e: e.is_leader, 30)
            down, up = seen["a-demoted"] - cut, seen["b-elected"] - cut
            assert down < up, "two leaders at once"
            figures.append((down, up))
            print(f"partition {i + 1}: leader stepped down after {down:.2f} s, other elected after {up:.2f} s",
                  flush=True)
        finally:
            await b.stop()
            await a.stop()
            await proxy.close()
    return figures


def summary(name: str, xs: list[float]) -> None:
    if xs:
        print(f"{name}: n={len(xs)} min {min(xs):.2f} s, median {statistics.median(xs):.2f} s, max {max(xs):.2f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("CALLCENTRE_TEST_PG_URL", ""))
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--role", default="measure-takeover")
    args = p.parse_args()
    if not args.url:
        p.error("--url or CALLCENTRE_TEST_PG_URL (source .ci/start-postgres)")
    cfg = ClusterConfig()
    print(f"timings: retry {cfg.retry_seconds} s, heartbeat {cfg.heartbeat_seconds} s, "
          f"timeout {cfg.heartbeat_timeout_seconds} s, lease {cfg.lease_seconds} s")
    kills = measure_kills(args.url, args.kills, args.role) if args.kills else []
    parts = asyncio.run(measure_partitions(args.url, args.partitions, cfg, args.role)) if args.partitions else []
    summary("SIGKILL -> other elected", kills)
    summary("partition -> leader stepped down", [d for d, _ in parts])
    summary("partition -> other elected", [u for _, u in parts])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
