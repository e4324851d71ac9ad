"""Live messages to the pages, and the wallboard's alerts among them.

Everything live goes through :meth:`WallboardNotifier.publish`: call distribution's snapshots and
screen-pops, and the service loops' events (a promise at 80 % or breached, a call-back that needs a
person, the daily reconciliation ready). A wallboard event that is neither a snapshot nor an alert
is turned into an alert with a sentence a supervisor can read, and call distribution keeps the
recent alerts so a wallboard that (re)connects shows them.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Callable, Mapping, MutableSequence, Protocol

import structlog

from callcentre.domain.ports import Clock

log = structlog.get_logger(__name__)

WALLBOARD = "wallboard"


class Topics(Protocol):
    """Where messages go (the web layer's hub): one JSON encoding, never waits for a browser."""

    def publish(self, topic: str, payload: dict[str, Any]) -> int: ...


class KeepsAlerts(Protocol):
    """Call distribution, which shows its recent alerts to a wallboard that connects."""

    alerts: MutableSequence[dict[str, Any]]


def as_alert(payload: Mapping[str, Any], clock: Clock) -> dict[str, Any]:
    """A service-loop event (promise warning or breach, call-back needing a person) as a wallboard alert."""
    kind = str(payload.get("type") or payload.get("kind") or "alert")
    ticket = payload.get("ticket")
    messages = {
        "promise_warning": f"Ticket {ticket} has used 80% of its promised time",
        "promise_breach": f"Ticket {ticket} is past its promised time: escalated to the quality department",
    }
    message = payload.get("message") or messages.get(kind) or (f"{kind.replace('_', ' ')}: ticket {ticket}" if ticket else kind)
    return {**{k: v for k, v in payload.items() if isinstance(v, (str, int, float, bool)) or v is None},
            "kind": kind, "message": str(message), "at": payload.get("at") or clock.now().isoformat()}


class WallboardNotifier:
    def __init__(self, topics: Topics, clock: Clock, acd: Callable[[], KeepsAlerts | None]) -> None:
        """``acd`` is asked for call distribution when an alert is published (it may be off)."""
        self._topics = topics
        self._clock = clock
        self._acd = acd

    def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        """Everything live goes through here; wallboard events other than snapshots become alerts."""
        message = dict(payload)
        if topic == WALLBOARD and message.get("type") not in ("snapshot", "alert"):
            message = {"type": "alert", "alert": as_alert(message, self._clock)}
        acd = self._acd()
        if topic == WALLBOARD and message.get("type") == "alert" and acd is not None:
            acd.alerts.append(message["alert"])
        self._topics.publish(topic, message)

    def reconciliation_ready(self, day: date, text: str, csv_text: str) -> None:
        """当日盘点 done: tell the supervisors (the report itself is on the reports page and CLI)."""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        log.info("daily reconciliation", day=str(day), summary=lines[:3])
        self.publish(WALLBOARD, {"type": "daily_reconciliation", "message": f"Daily reconciliation for {day} is ready",
                                 "day": str(day)})


__all__ = ["WALLBOARD", "KeepsAlerts", "Topics", "WallboardNotifier", "as_alert"]
