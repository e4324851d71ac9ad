"""Ticket numbers: one definition for making, parsing and checking (callcentre.domain.ticket_number)."""

from __future__ import annotations

import doctest
from datetime import date

import pytest

from callcentre.domain import ticket_number
from callcentre.domain.ticket_number import TicketNumber, is_ticket_number


def test_doctests() -> None:
    result = doctest.testmod(ticket_number)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("text, expected", [
    ("R20261124-0007", TicketNumber("R", date(2026, 11, 24), 7)),
    ("EM20260229-9999", None),  # 2026 is not a leap year
    ("EM20280229-10000", TicketNumber("EM", date(2028, 2, 29), 10000)),
    ("ABCD20261124-12345678", TicketNumber("ABCD", date(2026, 11, 24), 12345678)),
    ("ABCDE20261124-0001", None),  # prefix too long
    ("20261124-0001", None),  # no prefix
    ("r20261124-0001", None),  # lower case
    ("R20261124-001", None),  # counter under four digits
    ("R20261124-123456789", None),  # counter over eight digits
    ("R2026112-0001", None),
    ("R20261124-0001\n", None),
    (" R20261124-0001", None),
    (None, None),
    (20261124, None),
])
def test_parse(text, expected) -> None:
    assert TicketNumber.parse(text) == expected
    assert is_ticket_number(text) is (expected is not None)


def test_format_round_trips_and_pads_to_four_digits() -> None:
    for n in (TicketNumber("Q", date(2026, 1, 2), 1), TicketNumber("M", date(2026, 12, 31), 123456)):
        assert TicketNumber.parse(str(n)) == n
    assert str(TicketNumber("Q", date(2026, 1, 2), 1)) == "Q20260102-0001"


@pytest.mark.parametrize("prefix, counter", [("", 1), ("r", 1), ("ABCDE", 1), ("R", 0), ("R", 100_000_000)])
def test_bad_parts_are_refused(prefix, counter) -> None:
    with pytest.raises(ValueError):
        TicketNumber(prefix, date(2026, 1, 1), counter)


def test_a_configured_prefix_that_is_not_a_ticket_prefix_is_refused_at_start_up() -> None:
    from callcentre.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="tickets.number_prefix"):
        load_config(None, environ={"CALLCENTRE_TICKETS__NUMBER_PREFIX__REPAIR": "rep-"})
    assert load_config(None, environ={"CALLCENTRE_TICKETS__NUMBER_PREFIX__REPAIR": "RP"}).tickets.number_prefix["repair"] == "RP"
