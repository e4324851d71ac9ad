"""Caller-ID normalisation: whatever Asterisk or a CSV gives us, one canonical key.

Owners are looked up by phone number, so ``+86 138-0013-8000``, ``008613800138000`` and
``13800138000`` must all become the same string (E.164, ``+8613800138000``). Caller ID comes from
outside (the caller's network, a SIP header), so these functions are pure, total and never raise.
"""

from __future__ import annotations

import re
import unicodedata

# Caller-ID values Asterisk and carriers use for "no number"; compared case-insensitively.
WITHHELD = frozenset(
    {
        "anonymous",
        "unknown",
        "<unknown>",
        "withheld",
        "restricted",
        "private",
        "unavailable",
        "unavailable/private",
        "blocked",
        "none",
    }
)

# Longer input than this is not a phone number; refusing early keeps hostile input cheap.
_MAX_RAW = 64
# A number may carry a leading '+' and these separators between digits, nothing else.
_ALLOWED = re.compile(r"\+?[0-9 \t\-.()/]+")
_EXT_PREFIX = "ext:"
_EXT_MIN, _EXT_MAX = 2, 6
_LOCAL_MIN, _LOCAL_MAX = 7, 8  # a landline without its area code (China: 7-8 digits)
_NATIONAL_MIN = 9  # a national number without trunk prefix (China: mobiles 11, landlines 9-11)
_E164_MIN, _E164_MAX = 8, 15

# Control characters (Cc), format characters (Cf: bidi overrides, RTL/LTR marks, zero-width), and
# surrogates/private/unassigned code points never belong in a name shown to an agent.
_DROP_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def _digits_only(s: str) -> str:
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _e164(digits: str) -> str | None:
    if _E164_MIN <= len(digits) <= _E164_MAX and digits[0] != "0":
        return "+" + digits
    return None


def normalise(
    raw: str | None,
    country_code: str = "86",
    trunk_prefix: str = "0",
    intl_prefix: str = "00",
    area_code: str | None = None,
) -> str | None:
    """Return ``+<digits>`` (E.164), ``ext:<digits>`` for an internal extension, or None.

    None means "no usable number": withheld, unknown, empty, malformed, too short, or a local
    landline number without its area code when ``area_code`` is not given.
    """
    if not isinstance(raw, str) or len(raw) > _MAX_RAW:
        return None
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text or text.lower() in WITHHELD:
        return None
    if text.lower().startswith(_EXT_PREFIX):
        ext = text[len(_EXT_PREFIX) :]
        if ext.isascii() and ext.isdigit() and _EXT_MIN <= len(ext) <= _EXT_MAX:
            return _EXT_PREFIX + ext
        return None
    if not _ALLOWED.fullmatch(text):
        return None
    plus = text.startswith("+")
    digits = _digits_only(text)
    if not digits:
        return None
    if plus:
        return _e164(digits)
    if len(digits) <= _EXT_MAX:
        return _EXT_PREFIX + digits if len(digits) >= _EXT_MIN else None
    if intl_prefix and digits.startswith(intl_prefix):
        return _e164(digits[len(intl_prefix) :])
    if trunk_prefix and digits.startswith(trunk_prefix):
        national = digits[len(trunk_prefix) :]
        if len(national) < _LOCAL_MIN - 1:
            return None
        return _e164(country_code + national)
    if country_code and digits.startswith(country_code) and len(digits) - len(country_code) >= _NATIONAL_MIN:
        return _e164(digits)
    if len(digits) >= _NATIONAL_MIN:
        return _e164(country_code + digits)
    # 7-8 digits: a local landline number, usable only when we know the area code.
    if area_code:
        area = _digits_only(area_code)
        if trunk_prefix and area.startswith(trunk_prefix):
            area = area[len(trunk_prefix) :]
        if area:
            return _e164(country_code + area + digits)
    return None


def safe_display_name(name: str | None, max_len: int = 64) -> str:
    """A caller or owner name that is safe to show and log: one line, no control or bidi characters.

    Line breaks and tabs become spaces (so a name cannot fake a second log line or field), runs of
    spaces collapse, and the result is cut to ``max_len`` characters.
    """
    if not isinstance(name, str):
        return ""
    text = name[: max(max_len, 0) * 4 + 64]  # bound the work on 10 kB input
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    for ch in text:
        if ch in "\r\n\t\v\f\u2028\u2029\x85":
            out.append(" ")
        elif unicodedata.category(ch) in _DROP_CATEGORIES:
            continue
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    return cleaned[:max_len].rstrip()
