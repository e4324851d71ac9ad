"""Numbers, amounts, dates, times and ticket numbers as sequences of prompt names.

Asterisk ships no Mandarin sounds, so everything the IVR reads out is assembled from our own
prompts (``prompts/<lang>/<name>.wav``). Each function here returns *bare* prompt names (no
language folder); the caller prefixes ``"<lang>/"``. Pure: no I/O, no state.

Mandarin choices (documented because several forms are in use):

* Formal place-value reading: 12 = 十二 (a leading 一十 is dropped), but inside a larger
  number the 一 is kept: 112 = 一百一十二, 10010 = 一万零一十.
* One 零 for each run of zeros between non-zero places: 105 = 一百零五, 1005 = 一千零五,
  100005 = 十万零五, 105000 = 十万零五千, 20500000 = 两千零五十万.
* 两 (not 二) when 2 is the first digit of a four-digit group and multiplies 百, 千 or 万
  (两百, 两千, 两万, 一万两千, 两千二百万), as people say it on the phone; 二 elsewhere
  (一千二百, 二十, 十二, 三十二万). Clock hours say 两点 for 2 o'clock. Amounts follow the
  number rules (二元, 两百元).
* Amounts: 元/角/分, with 零 before 分 when there are 元 but no 角 (一元零五分); 0 is 零元.

English: British style ("one hundred and five", "two thousand and seven"), amounts as
"<n> yuan and <m> cents", dates as month name + cardinal, times as 24-hour "fourteen thirty"
("fourteen o'clock" on the hour, "fourteen zero five" for single-digit minutes).
"""

from __future__ import annotations

import datetime
from typing import Literal

from callcentre.domain.ticket_number import TicketNumber

Lang = Literal["zh", "en"]

LANGS: tuple[Lang, ...] = ("zh", "en")

MAX_NUMBER = 99_999_999



def _check_lang(lang: str) -> Lang:
    if lang not in LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGS}")
    return lang  # type: ignore[return-value]


def digits(s: str, lang: Lang) -> list[str]:
    """Speak a string of decimal digits one by one (phone numbers, unit numbers, ticket counters)."""
    _check_lang(lang)
    if not isinstance(s, str) or not s or not s.isascii() or not s.isdigit():
        raise ValueError(f"digits() needs a non-empty string of 0-9, got {s!r}")
    return [f"digit-{c}" for c in s]


# --------------------------------------------------------------------------- numbers


def _zh_below_10000(n: int, leading: bool) -> list[str]:
    """0 < n < 10000 in Mandarin. ``leading``: n starts the whole number (so 十二, not 一十二)."""
    out: list[str] = []
    places = ((1000, "zh-qian"), (100, "zh-bai"))
    pending_zero = False
    started = False
    for value, word in places:
        d = (n // value) % 10
        if d:
            if pending_zero:
                out.append("zh-ling")
                pending_zero = False
            out += ["zh-liang" if d == 2 and not started else f"num-{d}", word]
            started = True
        elif started:
            pending_zero = True
    tens, units = (n // 10) % 10, n % 10
    if tens:
        if pending_zero:
            out.append("zh-ling")
            pending_zero = False
        if tens == 1:
            # 十X as one prompt; inside a larger number prefix 一: 一百一十二.
            if started or not leading:
                out.append("num-1")
            out.append(f"num-{10 + units}")
            return out
        out.append(f"num-{tens * 10}")
        started = True
    elif started and units:
        pending_zero = True
    if units:
        if pending_zero:
            out.append("zh-ling")
        out.append(f"num-{units}")
    return out


def _zh_number(n: int) -> list[str]:
    if n == 0:
        return ["num-0"]
    high, low = divmod(n, 10_000)
    out: list[str] = []
    if high:
        out += ["zh-liang"] if high == 2 else _zh_below_10000(high, leading=True)
        out.append("zh-wan")
        if low:
            # A gap in the places between the 万 group and the rest is read as one 零:
            # 十万零五千 (105000), 一万零五 (10005), but 一万五千 (15000).
            if low < 1000 or high % 10 == 0:
                out.append("zh-ling")
            out += _zh_below_10000(low, leading=False)
    else:
        out += _zh_below_10000(low, leading=True)
    return out


def _en_below_100(n: int) -> list[str]:
    if n <= 20:
        return [f"num-{n}"]
    tens, units = divmod(n, 10)
    return [f"num-{tens * 10}"] + ([f"num-{units}"] if units else [])


def _en_below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    out: list[str] = []
    if hundreds:
        out += [f"num-{hundreds}", "num-100"]
        if rest:
            out.append("and")
    if rest:
        out += _en_below_100(rest)
    return out


def _en_number(n: int) -> list[str]:
    if n == 0:
        return ["num-0"]
    millions, rest = divmod(n, 1_000_000)
    thousands, units = divmod(rest, 1000)
    out: list[str] = []
    if millions:
        out += _en_below_1000(millions) + ["num-million"]
    if thousands:
        out += _en_below_1000(thousands) + ["num-1000"]
    if units:
        if out and units < 100:
            out.append("and")  # British: "two thousand and seven"
        out += _en_below_1000(units)
    return out


def number(n: int, lang: Lang) -> list[str]:
    """Speak an integer from -99,999,999 to 99,999,999 (negative numbers start with "minus")."""
    _check_lang(lang)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number() needs an int, got {type(n).__name__}")
    if abs(n) > MAX_NUMBER:
        raise ValueError(f"number {n} is outside ±{MAX_NUMBER:,}")
    sign = ["minus"] if n < 0 else []
    body = _zh_number(abs(n)) if lang == "zh" else _en_number(abs(n))
    return sign + body


# --------------------------------------------------------------------------- amounts


def amount(cents: int, lang: Lang) -> list[str]:
    """Speak a sum of money in fen (cents). Negative means the owner is in credit (prepaid)."""
    _check_lang(lang)
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amount() needs an int number of cents, got {type(cents).__name__}")
    yuan, rest = divmod(abs(cents), 100)
    if yuan > MAX_NUMBER:
        raise ValueError(f"amount {cents} cents is too large to speak")
    if lang == "zh":
        jiao, fen = divmod(rest, 10)
        out: list[str] = []
        if yuan or not rest:
            out += _zh_number(yuan) + ["yuan"]
        if jiao:
            out += [f"num-{jiao}", "jiao"]
        if fen:
            if yuan and not jiao:
                out.append("zh-ling")
            out += [f"num-{fen}", "fen"]
        return (["credit"] + out) if cents < 0 else out
    out = []
    if yuan or not rest:
        out += _en_number(yuan) + ["yuan"]
    if rest:
        if out:
            out.append("and")
        out += _en_number(rest) + (["cent"] if rest == 1 else ["fen"])
    return (out + ["credit"]) if cents < 0 else out


# --------------------------------------------------------------------------- dates and times


def date(d: datetime.date, lang: Lang) -> list[str]:
    """Speak a calendar day without the year: zh 十一月二十四日, en "November twenty-four"."""
    _check_lang(lang)
    if not isinstance(d, datetime.date):
        raise TypeError(f"date() needs a datetime.date, got {type(d).__name__}")
    if lang == "zh":
        return [f"month-{d.month}"] + _zh_number(d.day) + ["day-word"]
    return [f"month-{d.month}"] + _en_number(d.day)


def clock_time(hour: int, minute: int, lang: Lang) -> list[str]:
    """Speak a 24-hour clock time: zh 十四点三十分 / 两点零五分, en "fourteen thirty"."""
    _check_lang(lang)
    for v, top, what in ((hour, 23, "hour"), (minute, 59, "minute")):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise ValueError(f"{what} must be an int from 0 to {top}, got {v!r}")
    if lang == "zh":
        out = (["zh-liang"] if hour == 2 else _zh_number(hour)) + ["o-clock"]
        if minute:
            if minute < 10:
                out.append("zh-ling")
            out += _zh_number(minute) + ["minute-word"]
        return out
    out = _en_number(hour)
    if minute == 0:
        return out + ["o-clock"]
    if minute < 10:
        out.append("digit-0")
    return out + _en_number(minute)


def ticket_number(number: str, lang: Lang) -> list[str]:
    """Speak a ticket number such as ``R20261124-0007`` as its month-day and counter digits.

    The prefix and year are left out: callers only need what they can key in or quote back. What
    is a ticket number is :class:`callcentre.domain.ticket_number.TicketNumber`'s to say (one
    definition for the store, the desk, the dialplan and this)."""
    _check_lang(lang)
    parsed = TicketNumber.parse(number)
    if parsed is None:
        raise ValueError(f"not a ticket number: {number!r} (expected e.g. R20261124-0007)")
    counter = number.rsplit("-", 1)[1]  # as written (its leading zeros are read out)
    return digits(f"{parsed.day:%m%d}", lang) + digits(counter, lang)


def unit_address(building: str, unit: str, lang: Lang) -> list[str]:
    """Read back a keyed-in address: zh 三栋一二零一室, en "building three, unit one two zero one".

    The word order differs between the languages, which is why it lives here and not in the IVR.
    The building is a cardinal number; the unit is read digit by digit, as people quote it.
    """
    _check_lang(lang)
    if not isinstance(building, str) or not building.isascii() or not building.isdigit() or len(building) > 8:
        raise ValueError(f"building must be 1-8 digits, got {building!r}")
    b = number(int(building), lang)
    u = digits(unit, lang)
    if lang == "zh":
        return b + ["building"] + u + ["unit-word"]
    return ["building"] + b + ["unit-word"] + u


def can_say_address(building: str, unit: str) -> bool:
    """Whether :func:`unit_address` can read this address (digits only: there are no letter prompts)."""
    return all(isinstance(v, str) and v.isascii() and v.isdigit() for v in (building, unit)) and len(building) <= 8


def _all_prompts() -> frozenset[str]:
    names = {f"digit-{i}" for i in range(10)}
    names |= {f"num-{i}" for i in range(21)} | {f"num-{i}" for i in range(30, 100, 10)}
    names |= {"num-100", "num-1000", "num-million", "zh-bai", "zh-qian", "zh-wan", "zh-ling", "zh-liang"}
    names |= {"yuan", "jiao", "fen", "cent", "and", "minus", "credit", "day-word", "o-clock", "minute-word"}
    names |= {"building", "unit-word"}
    names |= {f"month-{i}" for i in range(1, 13)}
    return frozenset(names)


ALL_PROMPTS: frozenset[str] = _all_prompts()
"""Every prompt name the functions above can return, in either language."""
