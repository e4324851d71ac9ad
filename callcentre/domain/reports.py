"""Daily reconciliation (当日盘点, 001) and monthly statistics (002, 004), as pure functions.

Inputs are plain records the storage adapter fills; outputs are plain rows, shown by the supervisor
page and printed by ``callcentre report daily|monthly`` (:func:`to_csv`).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from typing import Any, Iterable, Literal, Mapping, Sequence
from zoneinfo import ZoneInfo

from callcentre.domain.menu import PASS_THROUGH, TICKET_ACTIONS as _TICKET_ACTIONS
from callcentre.domain.model import TicketKind, TicketStatus
from callcentre.domain.promises import promise_kept

# Menu actions (by their configured names) that must end in a ticket, and those that are not the
# caller's choice (language, repeat): both from the one definition in domain/menu.py.
TICKET_ACTIONS = frozenset(a.value for a in _TICKET_ACTIONS)
_PASS_THROUGH = frozenset(a.value for a in PASS_THROUGH)


@dataclass(frozen=True, slots=True)
class TicketRow:
    number: str
    kind: TicketKind
    category: str
    status: TicketStatus
    created_at: datetime
    promised_by: datetime | None
    resolved_at: datetime | None = None
    department: str | None = None
    building: str | None = None
    agent: str | None = None
    first_contact: bool | None = None
    repeat: bool = False
    satisfaction: int | None = None  # 1–5 from the call-back survey
    call_uniqueid: str | None = None
    call_linkedid: str | None = None
    hotline: str | None = None


@dataclass(frozen=True, slots=True)
class CallRow:
    uniqueid: str
    started_at: datetime
    caller_id: str | None
    ivr_path: str  # digits pressed, e.g. "9>2>1>rec"
    linkedid: str | None = None
    agent: str | None = None  # who answered, if an agent did
    within_target: bool | None = None  # answered within the ring target (two rings); None if no agent
    hotline: str | None = None  # the hotline the call came in on: its menu reads the IVR path


def chosen_action(ivr_path: str, menu: Mapping[str, str]) -> str | None:
    """The main-menu action the caller chose: the first step of the path that maps to an action other
    than switching language or repeating the menu (wrong digits were re-prompted, so skip them too)."""
    for step in ivr_path.split(">"):
        action = menu.get(step.strip())
        if action is not None and action not in _PASS_THROUGH:
            return action
    return None


def _local_date(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class MissingTicket:
    uniqueid: str
    started_at: datetime
    caller_id: str | None
    action: str


@dataclass(frozen=True, slots=True)
class DailyReconciliation:
    day: date
    intake: int
    by_kind: dict[str, int]
    by_category: dict[str, int]
    by_status: dict[str, int]
    not_acknowledged: list[str]  # open, still new
    not_dispatched: list[str]  # acknowledged or reopened, not yet with a worker
    past_promise: list[str]  # open and past the promised time
    calls_without_ticket: list[MissingTicket]

    @property
    def clean(self) -> bool:
        """Nothing waiting and nothing lost."""
        return not (self.not_acknowledged or self.not_dispatched or self.past_promise or self.calls_without_ticket)

    def rows(self) -> list[dict[str, object]]:
        """Flat (section, key, value) rows for CSV and the CLI."""
        out: list[dict[str, object]] = [{"section": "intake", "key": "total", "value": self.intake}]
        for section, counts in (("kind", self.by_kind), ("category", self.by_category), ("status", self.by_status)):
            out += [{"section": section, "key": k, "value": v} for k, v in sorted(counts.items())]
        for section, numbers in (
            ("not_acknowledged", self.not_acknowledged),
            ("not_dispatched", self.not_dispatched),
            ("past_promise", self.past_promise),
        ):
            out += [{"section": section, "key": n, "value": ""} for n in numbers]
        out += [
            {"section": "call_without_ticket", "key": m.uniqueid, "value": f"{m.action} {m.caller_id or ''}".strip()}
            for m in self.calls_without_ticket
        ]
        return out


def daily_reconciliation(
    day: date,
    tz: str,
    tickets: Iterable[TicketRow],
    calls: Iterable[CallRow],
    menu: Mapping[str, str],
    now: datetime,
    menus: Mapping[str, Mapping[str, str]] | None = None,
) -> DailyReconciliation:
    """Reconcile one local day: its intake, what still waits, and calls that chose a ticket-making
    branch but have no ticket.

    ``tickets`` should hold the day's tickets and every ticket still open (older ones can still wait);
    the intake counts only the day's, the waiting lists cover all open ones given. A ticket belongs to
    a call when its ``call_uniqueid`` or ``call_linkedid`` is the call's uniqueid or linkedid.
    ``menus``: each hotline's menu (digit -> action), for a call of that hotline; others use ``menu``.
    """
    zone = ZoneInfo(tz)
    tickets = list(tickets)
    todays = [t for t in tickets if _local_date(t.created_at, zone) == day]
    open_ = sorted((t for t in tickets if t.status.is_open), key=lambda t: (t.created_at, t.number))
    ids: set[str] = set()
    for t in tickets:
        ids.update(i for i in (t.call_uniqueid, t.call_linkedid) if i)
    missing: list[MissingTicket] = []
    for call in sorted(calls, key=lambda c: (c.started_at, c.uniqueid)):
        if _local_date(call.started_at, zone) != day:
            continue
        action = chosen_action(call.ivr_path, (menus or {}).get(call.hotline or "", menu))
        if action not in TICKET_ACTIONS:
            continue
        if call.uniqueid in ids or (call.linkedid and call.linkedid in ids):
            continue
        missing.append(MissingTicket(call.uniqueid, call.started_at, call.caller_id, action))
    return DailyReconciliation(
        day=day,
        intake=len(todays),
        by_kind=dict(Counter(t.kind.value for t in todays)),
        by_category=dict(Counter(t.category for t in todays)),
        by_status=dict(Counter(t.status.value for t in todays)),
        not_acknowledged=[t.number for t in open_ if t.status is TicketStatus.NEW],
        not_dispatched=[
            t.number for t in open_ if t.status in (TicketStatus.ACKNOWLEDGED, TicketStatus.REOPENED)
        ],
        past_promise=[t.number for t in open_ if t.promised_by is not None and now > t.promised_by],
        calls_without_ticket=missing,
    )


GroupBy = Literal["category", "department", "building", "agent"]


@dataclass(frozen=True, slots=True)
class MonthlyRow:
    group_by: str
    group: str
    tickets: int
    resolved: int
    promises_kept: int
    promise_kept_share: float | None
    calls_answered: int
    two_ring_share: float | None
    first_contact_resolutions: int
    first_contact_share: float | None
    repeat_complaints: int
    satisfaction_responses: int
    satisfaction_average: float | None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


_NONE_GROUP = "(none)"


def monthly_statistics(
    year: int,
    month: int,
    tz: str,
    tickets: Iterable[TicketRow],
    calls: Iterable[CallRow],
    group_by: GroupBy,
) -> list[MonthlyRow]:
    """Figures for one local calendar month, one row per group plus a ``(total)`` row last.

    Promises kept and first-contact share are over resolved tickets. The two-ring share is over calls
    answered by an agent; for groups other than agent a call counts in the group of its ticket.
    """
    if group_by not in ("category", "department", "building", "agent"):
        raise ValueError(f"group_by must be category, department, building or agent (got {group_by!r})")
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1 to 12 (got {month})")
    zone = ZoneInfo(tz)

    def in_month(at: datetime) -> bool:
        d = _local_date(at, zone)
        return (d.year, d.month) == (year, month)

    month_tickets = [t for t in tickets if in_month(t.created_at)]
    by_call: dict[str, TicketRow] = {}
    for t in month_tickets:
        for i in (t.call_uniqueid, t.call_linkedid):
            if i:
                by_call.setdefault(i, t)

    def key_of(t: TicketRow) -> str:
        return str(getattr(t, group_by) or _NONE_GROUP)

    groups: dict[str, list[TicketRow]] = {}
    for t in month_tickets:
        groups.setdefault(key_of(t), []).append(t)
    call_groups: dict[str, list[CallRow]] = {}
    answered = [c for c in calls if in_month(c.started_at) and c.agent is not None and c.within_target is not None]
    for c in answered:
        if group_by == "agent":
            key = c.agent or _NONE_GROUP
        else:
            ticket = by_call.get(c.uniqueid) or (by_call.get(c.linkedid) if c.linkedid else None)
            key = key_of(ticket) if ticket is not None else _NONE_GROUP
        call_groups.setdefault(key, []).append(c)

    def row(name: str, ts: Sequence[TicketRow], cs: Sequence[CallRow]) -> MonthlyRow:
        resolved = [t for t in ts if t.resolved_at is not None]
        kept = sum(1 for t in resolved if promise_kept(t.promised_by, t.resolved_at))
        measured = sum(1 for t in resolved if t.promised_by is not None)
        fcr = sum(1 for t in resolved if t.first_contact)
        rated = [t.satisfaction for t in ts if t.satisfaction is not None]
        within = sum(1 for c in cs if c.within_target)
        return MonthlyRow(
            group_by=group_by,
            group=name,
            tickets=len(ts),
            resolved=len(resolved),
            promises_kept=kept,
            promise_kept_share=_share(kept, measured),
            calls_answered=len(cs),
            two_ring_share=_share(within, len(cs)),
            first_contact_resolutions=fcr,
            first_contact_share=_share(fcr, len(resolved)),
            repeat_complaints=sum(1 for t in ts if t.repeat and t.kind is TicketKind.COMPLAINT),
            satisfaction_responses=len(rated),
            satisfaction_average=round(sum(rated) / len(rated), 2) if rated else None,
        )

    names = sorted(set(groups) | set(call_groups))
    rows = [row(n, groups.get(n, []), call_groups.get(n, [])) for n in names]
    rows.append(row("(total)", month_tickets, answered))
    return rows


# A cell starting with one of these is a formula in spreadsheet programs (CSV injection): building
# names, agents and categories come from imports and people, so such cells are quoted with "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        value = value.value
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: Sequence[Mapping[str, Any] | Any]) -> str:
    """Rows (dataclasses or mappings with the same keys) as CSV text with a header line.

    Empty input gives an empty string. Line endings are ``\\r\\n`` (RFC 4180).
    """
    if not rows:
        return ""
    dicts: list[Mapping[str, Any]] = []
    for r in rows:
        if is_dataclass(r) and not isinstance(r, type):
            dicts.append({f.name: getattr(r, f.name) for f in fields(r)})
        elif isinstance(r, Mapping):
            dicts.append(r)
        else:
            raise TypeError(f"to_csv: a row must be a dataclass or a mapping (got {type(r).__name__})")
    header = list(dicts[0].keys())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for d in dicts:
        if list(d.keys()) != header:
            raise ValueError(f"to_csv: rows have different columns ({list(d.keys())} vs {header})")
        writer.writerow([_cell(d[k]) for k in header])
    return buf.getvalue()


__all__ = [
    "CallRow",
    "DailyReconciliation",
    "MissingTicket",
    "MonthlyRow",
    "TicketRow",
    "chosen_action",
    "daily_reconciliation",
    "monthly_statistics",
    "to_csv",
]
