"""``/metrics`` in the Prometheus text format, read from the live services at scrape time.

A registry per scrape with one custom collector: no module-level metric objects, nothing to keep in
step; the figures are the distributor's own (the same the API and the wallboard show).
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, services: Any) -> None:
        self.s = services

    def collect(self) -> Iterator[Metric]:
        s = self.s
        agi = s.agi
        up = GaugeMetricFamily("callcentre_up", "1 when the part is working", labels=["part"])
        up.add_metric(["fastagi"], 1.0 if agi is not None and agi.listening else 0.0)
        up.add_metric(["ami"], 1.0 if s.ami is not None and s.ami.connected else 0.0)
        yield up
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the server's event loop
            tasks = None
        if tasks is not None:
            yield GaugeMetricFamily("callcentre_event_loop_tasks", "asyncio tasks alive in the server", value=tasks)
        if s.engine is not None and s.engine.url.get_backend_name() != "sqlite":
            pool = s.engine.pool
            yield GaugeMetricFamily("callcentre_db_pool_connections", "Database connections the pool holds open",
                                    value=int(pool.checkedin()) + int(pool.checkedout()))
        if agi is not None:
            yield GaugeMetricFamily("callcentre_agi_sessions", "FastAGI sessions in progress", value=agi.active_sessions)
            c = CounterMetricFamily("callcentre_agi_connections", "FastAGI connections by outcome", labels=["outcome"])
            for key, value in agi.stats.as_dict().items():
                c.add_metric([key], value)
            yield c
        if s.ami is not None:
            st = s.ami.status()
            yield CounterMetricFamily("callcentre_ami_reconnects", "AMI reconnections", value=st.get("reconnects", 0))
        yield from _queue_log(s)
        yield from _recordings(getattr(s, "recordings", None))
        yield from _cluster(getattr(s, "node", None))
        if s.acd is None:
            return
        m = s.acd.metrics()
        snap = s.acd.dist
        yield GaugeMetricFamily("callcentre_queue_waiting", "Callers waiting for an agent", value=snap.waiting_count())
        yield GaugeMetricFamily("callcentre_agents_ready", "Agents ready", value=snap.ready_count())
        yield GaugeMetricFamily("callcentre_agents_staffed", "Agents logged in and not paused", value=snap.staffed_count())
        gauges = (
            ("call_two_ring_share", "two_ring_share_calls", "Share of today's answered calls answered within the ring target"),
            ("offer_two_ring_share", "two_ring_share_offers", "Share of today's offers answered within the ring target"),
            ("avg_speed_of_answer", "speed_of_answer_avg_seconds", "Average speed of answer today"),
            ("p90_speed_of_answer", "speed_of_answer_p90_seconds", "90th-percentile speed of answer today"),
            ("abandon_rate", "abandon_rate", "Share of today's calls abandoned while waiting"),
            ("longest_current_wait", "longest_current_wait_seconds", "Longest wait of a caller waiting now"),
            ("calls_entered", "today_calls_entered", "Calls that asked for a person today"),
            ("calls_answered", "today_calls_answered", "Calls answered by an agent today"),
            ("calls_answered_within_target", "today_calls_answered_within_target", "Calls answered within two rings today"),
            ("calls_abandoned", "today_calls_abandoned", "Calls abandoned while waiting today"),
            ("offers", "today_offers", "Offers (agent phones rung) today"),
            ("offers_missed", "today_offers_missed", "Offers not answered within the target today"),
            ("breaches", "today_breaches", "Two-ring breaches today"),
        )
        for key, name, help_text in gauges:
            value = m.get(key)
            if value is not None:
                yield GaugeMetricFamily(f"callcentre_{name}", help_text, value=float(value))


def _queue_log(s: Any) -> Iterator[Metric]:
    """The queue_log file (config ``queue_log:``): lines written, refused by the file, dropped unwritten."""
    writer = getattr(s, "queue_log", None)
    if writer is None:
        return
    st = writer.stats()
    lines = CounterMetricFamily("callcentre_queue_log_lines", "queue_log lines by outcome", labels=["outcome"])
    for outcome, value in (("written", st.written), ("failed", st.failed), ("dropped", st.dropped)):
        lines.add_metric([outcome], value)
    yield lines
    yield GaugeMetricFamily("callcentre_queue_log_pending", "queue_log lines waiting for the disk", value=st.pending)
    yield GaugeMetricFamily("callcentre_queue_log_failing", "1 while the queue_log file refuses lines",
                            value=1.0 if st.failing else 0.0)
    acd = getattr(s, "acd", None) or getattr(s, "distribution", None)  # this term's distribution (cluster: fresh per term)
    if acd is not None:
        yield CounterMetricFamily("callcentre_queue_log_event_errors",
                                  "Distribution facts that could not become a queue_log line (see the log)",
                                  value=acd.queue_log.errors)


def _recordings(rec: Any) -> Iterator[Metric]:
    """Call recordings: the directory's use and free space, and the recordings by outcome."""
    if rec is None:
        return
    usage = rec.usage()
    if usage is not None and usage.exists:
        yield GaugeMetricFamily("callcentre_recording_directory_bytes", "Bytes of recordings in the recording directory",
                                value=usage.bytes)
        yield GaugeMetricFamily("callcentre_recording_files", "Files in the recording directory", value=usage.files)
        if usage.free_bytes is not None:
            yield GaugeMetricFamily("callcentre_recording_free_bytes", "Free bytes where recordings are written",
                                    value=usage.free_bytes)
            yield GaugeMetricFamily("callcentre_recording_filesystem_bytes", "Size of that file system",
                                    value=usage.total_bytes or 0)
    c = CounterMetricFamily("callcentre_recordings", "Answered calls' recordings checked, by status", labels=["status"])
    for status, n in sorted(rec.counts.items()):
        c.add_metric([status], n)
    yield c
    c = CounterMetricFamily("callcentre_recordings_skipped", "Recordings not started (the call went on)", labels=["reason"])
    for kind, n in sorted(rec.skips.items()):
        c.add_metric([kind], n)
    yield c
    yield CounterMetricFamily("callcentre_recordings_deleted", "Recordings deleted by retention", value=rec.deleted_total)
def _cluster(node: Any) -> Iterator[Metric]:
    """This node's part in a cluster (callcentre/cluster/node.py): leader or not, its term, elections."""
    if node is None:
        return
    st = node.status()
    leader = GaugeMetricFamily("callcentre_cluster_leader",
                               "1 when this node leads (runs call distribution and the run-once loops)", labels=["node"])
    leader.add_metric([str(st["name"])], 1.0 if st["role"] == "leader" else 0.0)
    yield leader
    if st.get("term") is not None:
        yield GaugeMetricFamily("callcentre_cluster_term", "The fencing term this node leads with", value=float(st["term"]))
    elector = st.get("elector") or {}
    for key, help_text in (("elections", "Times this node was elected"), ("losses", "Times this node lost the lead")):
        if key in elector:
            yield CounterMetricFamily(f"callcentre_cluster_{key}", help_text, value=float(elector[key]))


def render(services: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(services))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds… (Linux /proc)
    return generate_latest(registry), CONTENT_TYPE_LATEST
