"""speech.py: numbers, amounts, dates, times and ticket numbers as prompt names, in zh and en.

Besides the tables, the outputs are turned back into text through the catalogue and parsed again
(an independent reader of Chinese and English numerals), so a wrong rule *or* a wrong prompt text
fails.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from callcentre.domain import speech

CATALOGUE = Path(__file__).resolve().parent.parent / "prompts" / "catalogue.yaml"


def _texts() -> dict[str, dict[str, str]]:
    prompts = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))["prompts"]
    out: dict[str, dict[str, str]] = {"zh": {}, "en": {}}
    for name, entry in prompts.items():
        for lang in ("zh", "en"):
            item = entry[lang]
            out[lang][name] = item["text"] if isinstance(item, dict) else item
    return out


TEXTS = _texts()


def zh(names: list[str]) -> str:
    return "".join(TEXTS["zh"][n] for n in names)


def en(names: list[str]) -> str:
    return " ".join(TEXTS["en"][n] for n in names)


# ------------------------------------------------------------------ independent readers

_ZH_DIGIT = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000}


def zh_to_int(s: str) -> int:
    total = section = digit = 0
    for ch in s:
        if ch in _ZH_DIGIT:
            digit = _ZH_DIGIT[ch]
        elif ch in _ZH_UNIT:
            section += (digit or 1) * _ZH_UNIT[ch]
            digit = 0
        elif ch == "万":
            total += (section + digit) * 10_000
            section = digit = 0
        else:
            raise AssertionError(f"unexpected character {ch!r} in {s!r}")
    return total + section + digit


_EN_SMALL = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_EN_SMALL |= {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}


def en_to_int(s: str) -> int:
    total = current = 0
    for w in s.split():
        if w in _EN_SMALL:
            current += _EN_SMALL[w]
        elif w == "hundred":
            current *= 100
        elif w in ("thousand", "million"):
            total += current * (1000 if w == "thousand" else 1_000_000)
            current = 0
        elif w != "and":
            raise AssertionError(f"unexpected word {w!r} in {s!r}")
    return total + current


# ------------------------------------------------------------------ tables

ZH_NUMBERS = [
    (0, "零"), (1, "一"), (2, "二"), (10, "十"), (11, "十一"), (12, "十二"), (19, "十九"), (20, "二十"),
    (21, "二十一"), (99, "九十九"), (100, "一百"), (101, "一百零一"), (105, "一百零五"), (110, "一百一十"),
    (112, "一百一十二"), (200, "两百"), (222, "两百二十二"), (1000, "一千"), (1005, "一千零五"),
    (1010, "一千零一十"), (1050, "一千零五十"), (1200, "一千二百"), (2000, "两千"), (2200, "两千二百"),
    (10000, "一万"), (10005, "一万零五"), (10010, "一万零一十"), (12000, "一万两千"), (15000, "一万五千"),
    (20000, "两万"), (100000, "十万"), (105000, "十万零五千"), (120000, "十二万"), (200500, "二十万零五百"),
    (1000000, "一百万"), (10005000, "一千万零五千"), (20500000, "两千零五十万"),
    (22000000, "两千二百万"), (12345678, "一千二百三十四万五千六百七十八"),
    (99999999, "九千九百九十九万九千九百九十九"),
]

EN_NUMBERS = [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (105, "one hundred and five"), (999, "nine hundred and ninety nine"), (1000, "one thousand"),
    (1005, "one thousand and five"), (2024, "two thousand and twenty four"), (10005, "ten thousand and five"),
    (250000, "two hundred and fifty thousand"), (1000000, "one million"),
    (12345678, "twelve million three hundred and forty five thousand six hundred and seventy eight"),
]


@pytest.mark.parametrize(("n", "text"), ZH_NUMBERS)
def test_zh_numbers(n: int, text: str) -> None:
    assert zh(speech.number(n, "zh")) == text


@pytest.mark.parametrize(("n", "text"), EN_NUMBERS)
def test_en_numbers(n: int, text: str) -> None:
    assert en(speech.number(n, "en")) == text


def test_exact_names_for_a_few_numbers() -> None:
    assert speech.number(105, "zh") == ["num-1", "zh-bai", "zh-ling", "num-5"]
    assert speech.number(12, "zh") == ["num-12"]
    assert speech.number(2000, "zh") == ["zh-liang", "zh-qian"]
    assert speech.number(105, "en") == ["num-1", "num-100", "and", "num-5"]
    assert speech.number(-3, "en") == ["minus", "num-3"]


@pytest.mark.parametrize(
    ("cents", "zh_text", "en_text"),
    [
        (0, "零元", "zero yuan"),
        (1, "一分", "one cent"),
        (5, "五分", "five cents"),
        (50, "五角", "fifty cents"),
        (55, "五角五分", "fifty five cents"),
        (100, "一元", "one yuan"),
        (105, "一元零五分", "one yuan and five cents"),
        (120, "一元二角", "one yuan and twenty cents"),
        (12345, "一百二十三元四角五分", "one hundred and twenty three yuan and forty five cents"),
        (20000, "两百元", "two hundred yuan"),
        (-5000, "预存五十元", "fifty yuan in credit"),
    ],
)
def test_amounts(cents: int, zh_text: str, en_text: str) -> None:
    assert zh(speech.amount(cents, "zh")) == zh_text
    assert en(speech.amount(cents, "en")) == en_text


@pytest.mark.parametrize(
    ("d", "zh_text", "en_text"),
    [
        (datetime.date(2026, 11, 24), "十一月二十四日", "November twenty four"),
        (datetime.date(2026, 1, 1), "一月一日", "January one"),
        (datetime.date(2026, 2, 10), "二月十日", "February ten"),
        (datetime.date(2026, 12, 31), "十二月三十一日", "December thirty one"),
    ],
)
def test_dates(d: datetime.date, zh_text: str, en_text: str) -> None:
    assert zh(speech.date(d, "zh")) == zh_text
    assert en(speech.date(d, "en")) == en_text


def test_date_accepts_datetime_as_its_day() -> None:
    assert speech.date(datetime.datetime(2026, 3, 5, 23, 59), "zh") == ["month-3", "num-5", "day-word"]


@pytest.mark.parametrize(
    ("h", "m", "zh_text", "en_text"),
    [
        (14, 30, "十四点三十分", "fourteen thirty"),
        (14, 0, "十四点", "fourteen o'clock"),
        (14, 5, "十四点零五分", "fourteen zero five"),
        (2, 0, "两点", "two o'clock"),
        (2, 2, "两点零二分", "two zero two"),
        (0, 0, "零点", "zero o'clock"),
        (12, 10, "十二点十分", "twelve ten"),
        (23, 59, "二十三点五十九分", "twenty three fifty nine"),
    ],
)
def test_clock_times(h: int, m: int, zh_text: str, en_text: str) -> None:
    assert zh(speech.clock_time(h, m, "zh")) == zh_text
    assert en(speech.clock_time(h, m, "en")) == en_text


def test_ticket_number_is_month_day_then_counter_as_digits() -> None:
    names = speech.ticket_number("R20261124-0007", "zh")
    assert names == [f"digit-{c}" for c in "11240007"]
    assert zh(names) == "一一二四零零零七"
    assert en(speech.ticket_number("C20260105-0123", "en")) == "zero one zero five zero one two three"


def test_digits() -> None:
    assert speech.digits("0139", "en") == ["digit-0", "digit-1", "digit-3", "digit-9"]
    assert zh(speech.digits("1201", "zh")) == "一二零一"


def test_unit_address_word_order_differs() -> None:
    assert zh(speech.unit_address("3", "1201", "zh")) == "三栋一二零一室"
    assert en(speech.unit_address("3", "1201", "en")) == "building three unit one two zero one"
    assert zh(speech.unit_address("12", "0305", "zh")) == "十二栋零三零五室"


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: speech.number(100_000_000, "zh"), ValueError),
        (lambda: speech.number(-100_000_000, "en"), ValueError),
        (lambda: speech.number(1.5, "zh"), TypeError),  # type: ignore[arg-type]
        (lambda: speech.number(True, "zh"), TypeError),  # type: ignore[arg-type]
        (lambda: speech.number(5, "fr"), ValueError),  # type: ignore[arg-type]
        (lambda: speech.digits("", "zh"), ValueError),
        (lambda: speech.digits("12a", "zh"), ValueError),
        (lambda: speech.digits("١٢", "zh"), ValueError),  # non-ASCII digits
        (lambda: speech.digits("1 2", "en"), ValueError),
        (lambda: speech.amount(10_000_000_000, "zh"), ValueError),
        (lambda: speech.amount(1.0, "en"), TypeError),  # type: ignore[arg-type]
        (lambda: speech.clock_time(24, 0, "zh"), ValueError),
        (lambda: speech.clock_time(12, 60, "en"), ValueError),
        (lambda: speech.clock_time(-1, 0, "en"), ValueError),
        (lambda: speech.date("2026-11-24", "zh"), TypeError),  # type: ignore[arg-type]
        (lambda: speech.ticket_number("R2026112-0007", "zh"), ValueError),
        (lambda: speech.ticket_number("R20261124", "zh"), ValueError),
        (lambda: speech.ticket_number("R20261124-0007\n", "zh"), ValueError),
        (lambda: speech.ticket_number(None, "zh"), ValueError),  # type: ignore[arg-type]
        (lambda: speech.unit_address("", "1201", "zh"), ValueError),
        (lambda: speech.unit_address("3", "12a", "zh"), ValueError),
    ],
)
def test_bad_input_is_a_clear_error(call, exc) -> None:
    with pytest.raises(exc):
        call()


# ------------------------------------------------------------------ properties


@settings(max_examples=400, deadline=None)
@given(st.integers(0, speech.MAX_NUMBER))
def test_zh_numbers_read_back_and_are_canonical(n: int) -> None:
    names = speech.number(n, "zh")
    text = zh(names)
    assert zh_to_int(text) == n
    assert "零零" not in text
    assert text == "零" or not text.endswith("零")
    assert not text.startswith("一十")
    assert re.fullmatch(r"(两[百千万]|[^两])*", text), text  # 两 only before 百, 千 or 万
    assert set(names) <= speech.ALL_PROMPTS


@settings(max_examples=400, deadline=None)
@given(st.integers(0, speech.MAX_NUMBER))
def test_en_numbers_read_back(n: int) -> None:
    names = speech.number(n, "en")
    assert en_to_int(en(names)) == n
    assert set(names) <= speech.ALL_PROMPTS


@settings(max_examples=300, deadline=None)
@given(st.integers(-10_000_000_00, 10_000_000_00))
def test_amounts_read_back(cents: int) -> None:
    text = zh(speech.amount(cents, "zh"))
    credit = text.startswith("预存")
    body = text.removeprefix("预存")
    m = re.fullmatch(r"(?:(.+)元)?(?:(.)角)?(?:零?(.)分)?", body)
    assert m, text
    value = sum(zh_to_int(g) * k for g, k in zip(m.groups(), (100, 10, 1), strict=True) if g)
    assert (-value if credit else value) == cents
    words = en(speech.amount(cents, "en"))
    m = re.fullmatch(r"(?:(.+?) yuan)?(?: and )?(?:(.+) cents?)?( in credit)?", words)
    assert m, words
    value = sum(en_to_int(g) * k for g, k in zip(m.groups()[:2], (100, 1), strict=True) if g)
    assert (-value if m.group(3) else value) == cents


def test_all_prompts_is_exactly_what_speech_produces() -> None:
    produced: set[str] = set()
    for lang in speech.LANGS:
        for n in [*range(0, 1200), 2000, 12000, 20000, 105000, 1_000_000, 22_000_000, -1]:
            produced.update(speech.number(n, lang))
        for c in (0, 1, 5, 55, 105, -105):
            produced.update(speech.amount(c, lang))
        for month in range(1, 13):
            produced.update(speech.date(datetime.date(2026, month, 1), lang))
        for h in range(24):
            for m in (0, 5, 30):
                produced.update(speech.clock_time(h, m, lang))
        produced.update(speech.ticket_number("R20261124-0007", lang))
        produced.update(speech.digits("0123456789", lang))
        produced.update(speech.unit_address("3", "1201", lang))
    assert produced == speech.ALL_PROMPTS
