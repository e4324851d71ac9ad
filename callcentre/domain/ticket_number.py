"""Ticket numbers, one definition: ``<prefix><YYYYMMDD>-<counter>``, e.g. ``R20261124-0007``.

The prefix (1 to 4 capital letters) says the kind (``tickets.number_prefix`` in the configuration),
the date is the local day the ticket was made, the counter is that day's, at least four digits. Made
by the ticket store, spoken by the IVR, typed by agents into the desk, carried by the dialplan into
the survey call-back (``FILTER(-A-Z0-9,...)`` keeps every character of it): all of them use this.

>>> str(TicketNumber("R", date(2026, 11, 24), 7))
'R20261124-0007'
>>> TicketNumber.parse("C20261124-12345")
TicketNumber(prefix='C', day=datetime.date(2026, 11, 24), counter=12345)
>>> TicketNumber.parse("R20261324-0001") is None   # no 13th month
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

PREFIX_PATTERN = r"[A-Z]{1,4}"
PATTERN = re.compile(rf"(?P<prefix>{PREFIX_PATTERN})(?P<day>[0-9]{{8}})-(?P<counter>[0-9]{{4,8}})")
MAX_COUNTER = 99_999_999


@dataclass(frozen=True, slots=True)
class TicketNumber:
    prefix: str
    day: date
    counter: int

    def __post_init__(self) -> None:
        if not re.fullmatch(PREFIX_PATTERN, self.prefix):
            raise ValueError(f"a ticket prefix is 1 to 4 capital letters, not {self.prefix!r}")
        if not 1 <= self.counter <= MAX_COUNTER:
            raise ValueError(f"a ticket counter is 1 to {MAX_COUNTER}, not {self.counter}")

    def __str__(self) -> str:
        return f"{self.prefix}{self.day:%Y%m%d}-{self.counter:04d}"

    @classmethod
    def parse(cls, text: object) -> TicketNumber | None:
        """The number in ``text``, or None if it is not one (wrong shape, or a day that does not exist)."""
        if not isinstance(text, str):
            return None
        m = PATTERN.fullmatch(text)
        if m is None:
            return None
        d = m["day"]
        try:
            day = date(int(d[:4]), int(d[4:6]), int(d[6:]))
        except ValueError:
            return None
        return cls(m["prefix"], day, int(m["counter"]))


def is_ticket_number(text: object) -> bool:
    return TicketNumber.parse(text) is not None
