"""Pure AMI helpers: action sanitising and encoding, message parsing, tolerant field readers.

panoramisk writes action values as given, so a value holding ``\\r\\n\\r\\nAction: …`` would inject a
second action. Everything we write goes through :func:`sanitise_action` first, and is encoded by
:func:`encode_action` (ours, so the check and the bytes on the wire cannot drift apart).
Incoming messages are parsed by panoramisk's :class:`~panoramisk.message.Message` so the rest of
the application sees the library's case-insensitive message type.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from panoramisk.message import Message

EOL = "\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
# Asterisk's own placeholder for an empty caller ID or an unknown uniqueid.
UNKNOWN = "<unknown>"

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_ACTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FORBIDDEN = ("\r", "\n", "\x00")
# Headers that Asterisk reads several times from one action; every other header is single-valued.
MULTI_VALUED = frozenset({"variable"})

ActionValue = str | list[str]


class AMIValueRejected(ValueError):
    """An action key or value could not be written safely (CR, LF, NUL, too long, malformed)."""


def _check_value(key: str, value: object, max_len: int) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise AMIValueRejected(f"{key}: value must be text, not {type(value).__name__}")
    for ch in _FORBIDDEN:
        if ch in value:
            raise AMIValueRejected(f"{key}: value contains {ch!r} (CR, LF and NUL are not allowed)")
    if len(value) > max_len:
        raise AMIValueRejected(f"{key}: value is {len(value)} characters, the limit is {max_len}")
    return value


def sanitise_action(action: Mapping[str, ActionValue], max_len: int) -> dict[str, ActionValue]:
    """Return a clean copy of ``action`` or raise :class:`AMIValueRejected`.

    Keys must be header tokens (letters, digits, ``_``, ``-``), unique regardless of case; values
    must be text without CR, LF or NUL and at most ``max_len`` characters. ``Variable`` may be a
    list (one ``Variable:`` line each). ``Action`` is required and must be a plain name.
    """
    out: dict[str, ActionValue] = {}
    seen: set[str] = set()
    for key, value in action.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise AMIValueRejected(f"invalid action key {key!r}")
        lower = key.lower()
        if lower in seen:
            raise AMIValueRejected(f"{key}: given twice")
        seen.add(lower)
        if isinstance(value, (list, tuple)):
            if lower not in MULTI_VALUED:
                raise AMIValueRejected(f"{key}: only Variable may have several values")
            out[key] = [_check_value(key, v, max_len) for v in value]
        else:
            out[key] = _check_value(key, value, max_len)
    name = next((v for k, v in out.items() if k.lower() == "action"), None)
    if not isinstance(name, str) or not name:
        raise AMIValueRejected("Action is missing or empty")
    if not _ACTION_NAME.match(name):
        raise AMIValueRejected(f"Action {name!r} is not a plain action name")
    return out


def encode_action(action: Mapping[str, ActionValue]) -> bytes:
    """Encode an already sanitised action: ``Action`` first, ``ActionID`` second, then the rest."""
    order = sorted(action.items(), key=lambda kv: {"action": 0, "actionid": 1}.get(kv[0].lower(), 2))
    lines: list[str] = []
    for key, value in order:
        values: Sequence[str] = value if isinstance(value, list) else [value]
        lines.extend(f"{key}: {v}" for v in values)
    return (EOL.join(lines) + EOL + EOL).encode("utf-8")


def parse_message(block: str) -> Message | None:
    """Parse one message (the text before a blank line); None if it is neither event nor response.

    A fragment such as a lone ``Value: `` line (seen in ami-sip-call.txt) returns None.
    """
    text = block.strip("\r\n")
    if not text:
        return None
    try:
        return Message.from_line(text)
    except (ValueError, TypeError):  # defensive: the parser splits and unquotes only
        return None


def field(message: Mapping[str, object], name: str, default: str = "") -> str:
    """Read a header tolerantly: any case, last value of a repeated header, missing → default."""
    value: object = message.get(name) if hasattr(message, "get") else None
    if value is None:
        lower = name.lower()
        for key, v in message.items():
            if isinstance(key, str) and key.lower() == lower:
                value = v
                break
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return default
    return value if isinstance(value, str) else str(value)


def known(value: str) -> str | None:
    """``<unknown>`` and empty become None (Asterisk's placeholders for "nothing")."""
    value = value.strip()
    return None if value in ("", UNKNOWN) else value


def field_int(message: Mapping[str, object], name: str) -> int | None:
    try:
        return int(field(message, name).strip())
    except ValueError:
        return None


def event_name(message: Mapping[str, object]) -> str:
    return field(message, "Event")


def parse_duration(text: str) -> float | None:
    """CoreShowChannel ``Duration: HH:MM:SS`` → seconds."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        h, m, s = (int(p) for p in parts)
    except ValueError:
        return None
    return float(h * 3600 + m * 60 + s)
