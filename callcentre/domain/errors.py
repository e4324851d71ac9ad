"""The kinds of refusal the domain and its services raise, each with a stable ``code``.

A code is part of the API contract (the browser and other clients branch on it), so it is chosen
once, here or on the subclass, and never derived from a message. The web's error middleware maps
the kind to an HTTP status (not found 404, invalid 400, conflict 409, forbidden 403, unavailable
503) and answers ``{"error": {"code": ..., "message": ...}}``; no handler converts them itself.
"""

from __future__ import annotations


class _Coded(Exception):
    """A message for a person, and the code clients branch on (the class's own unless one is given)."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(_Coded, LookupError):
    """The owner, unit, ticket or agent named does not exist."""

    code = "not_found"


class TicketNotFound(NotFound):
    """No ticket with that id or number."""


class Invalid(_Coded, ValueError):
    """Input the domain refuses as it is; the message names what is wrong."""

    code = "invalid_request"


class Conflict(_Coded):
    """Not possible in the record's current state; ``code`` says which rule refused it."""

    code = "conflict"


class ConcurrentChange(Conflict):
    """Someone else changed the ticket since it was read; reload and try again."""

    code = "concurrent_change"


class Forbidden(_Coded):
    """This user's role may not do this (or see this)."""

    code = "forbidden"


class Unavailable(_Coded):
    """A part the request needs is not running (call distribution off, the server still starting)."""

    code = "unavailable"


__all__ = ["ConcurrentChange", "Conflict", "Forbidden", "Invalid", "NotFound", "TicketNotFound", "Unavailable"]
