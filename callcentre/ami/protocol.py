"""Pure AMI helpers: action sanitising and encoding, message parsing, tolerant field readers.

panoramisk writes action values as given, so a value holding ``\\r\\n\\r\\nAction: …`` would inject a
second action. Everything we write goes through :func:`sanitise_action` first, and is encoded by
:func:`encode_action` (ours, so the check and the bytes on the wire cannot drift apart).
Incoming messages are panoramisk's :class:`~panoramisk.message.Message` (the library's
case-insensitive message type, which the rest of the application reads), built by
:func:`parse_message` in one pass: every key is lower-cased once, into the very structure the
library's case-insensitive look-ups use, instead of a header dict copied key by key into a
``Message``. The result equals what ``Message.from_line`` builds (same keys, values, order, lists for
repeated headers, ``content``); the rare messages where the library's rules are subtle (a command's
body, one header repeated in another case) are handed to ``Message.from_line`` itself.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence
from urllib.parse import unquote

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


class AMIMessage(Message):
    """panoramisk's :class:`~panoramisk.message.Message`, built by :func:`parse_message`.

    It is one, and behaves exactly as the library's; ``get`` is one dictionary look-up instead of
    the ``Mapping`` default's ``__getitem__`` (and a ``KeyError`` for a header that is absent).
    """

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._store.get(key.lower())
        return default if entry is None else entry[1]


# Messages whose last line is a body (panoramisk's ``from_line`` pops it as ``content``).
_HAS_BODY = ("Response: Follows", "Response: Fail")
_QUOTED = frozenset(Message.quoted_keys)


def _library(text: str) -> Message | None:
    try:
        return Message.from_line(text)
    except (ValueError, TypeError):  # defensive: the parser splits and unquotes only
        return None


def _headers(text: str) -> dict[str, Any] | None:
    """The library's store for ``text`` (not a body message): lower-case key -> (key, value), and
    ``content``. None when one header comes in two cases: then the library's own rules decide."""
    store: dict[str, Any] = {}
    headers = 0
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            store[key.lower()] = (key, value)
            headers += 1
    if headers != len(store):
        return _repeated(text)  # a header given more than once (Variable: ...), rare: the careful way
    if "result" in store:  # the one header the library unquotes
        key, value = store["result"]
        store["result"] = (key, unquote(value).strip())
    store["content"] = ("content", "")
    return store


def _repeated(text: str) -> dict[str, Any] | None:
    """Headers of a message with a repeated header: a list of its values in the order sent, as the
    library makes it; the same header in two cases is left to the library itself."""
    store: dict[str, Any] = {}
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        lower = key.lower()
        if lower in _QUOTED:
            value = unquote(value).strip()
        entry = store.get(lower)
        if entry is None:
            store[lower] = (key, value)
        elif entry[0] == key:
            old = entry[1]
            store[lower] = (key, [*old, value] if isinstance(old, list) else [old, value])
        else:
            return None
    store["content"] = ("content", "")
    return store


def parse_message(block: str) -> Message | None:
    """Parse one message (the text before a blank line); None if it is neither event nor response.

    A fragment such as a lone ``Value: `` line (seen in ami-sip-call.txt) returns None. Equal to
    ``Message.from_line`` of the same text (tests/test_ami_protocol.py compares them on every capture
    and on generated messages).
    """
    text = block.strip("\r\n")
    if not text:
        return None
    if text.startswith(_HAS_BODY):
        return _library(text)
    store = _headers(text)
    if store is None:
        return _library(text)
    event = store.get("event")
    if event is None or event[0] != "Event":  # the library looks both up case-sensitively
        response = store.get("response")
        if response is None or response[0] != "Response":
            return None
    message = AMIMessage.__new__(AMIMessage)
    message.__dict__.update(_store=store, manager=None)
    return message


def field(message: Mapping[str, object], name: str, default: str = "") -> str:
    """Read a header tolerantly: any case, last value of a repeated header, missing → default."""
    if type(message) is AMIMessage:  # the hot path: one look-up in the parsed headers
        entry = message._store.get(name.lower())  # type: ignore[attr-defined]
        if entry is None:
            return default
        value: object = entry[1]
        if type(value) is str:
            return value
    else:
        value = message.get(name) if hasattr(message, "get") else None
        if value is None and not isinstance(message, Message):  # a Message's get is already case-insensitive
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
