"""Database failures as :class:`~callcentre.domain.ports.StorageUnavailable`, with a reason a person can act on."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from callcentre.domain.ports import StorageUnavailable

log = structlog.get_logger(__name__)


def reason(exc: BaseException) -> str:
    """A short, human reason for a database failure."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    low = text.lower()
    # SQLite says "database is locked"; PostgreSQL "canceling statement due to lock timeout".
    if "locked" in low or "busy" in low or "lock timeout" in low:
        return f"database is locked by another process ({text})"
    if "readonly" in low or "read-only" in low or "read only" in low:
        return f"database is read-only ({text})"
    if "full" in low or "no space" in low:
        return f"disk is full ({text})"
    if isinstance(orig, (ConnectionRefusedError, ConnectionError)) or "refused" in low or "connect" in low:
        return f"database server cannot be reached ({text})"
    return text


def is_storage_failure(exc: BaseException) -> bool:
    """The database (not this one write) failed: locked, read-only, full, unreachable, broken."""
    return isinstance(exc, (DBAPIError, PoolTimeout, OSError)) and not isinstance(exc, IntegrityError)


@asynccontextmanager
async def storage_errors(what: str) -> AsyncIterator[None]:
    """Turn driver failures into StorageUnavailable; IntegrityError is left to the caller."""
    try:
        yield
    except IntegrityError:
        raise
    except (DBAPIError, PoolTimeout, OSError) as exc:
        why = reason(exc)
        log.error("storage unavailable", action=what, reason=why)
        raise StorageUnavailable(f"cannot {what}: {why}") from exc
