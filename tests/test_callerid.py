"""Caller-ID normalisation: table tests and properties (total, canonical, idempotent)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcentre.domain.callerid import normalise, safe_display_name

CANONICAL = re.compile(r"^(\+[1-9][0-9]{7,14}|ext:[0-9]{2,6})$")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+86 138-0013-8000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("13800138000", "+8613800138000"),
        ("138.0013.8000", "+8613800138000"),
        ("(138) 0013 8000", "+8613800138000"),
        ("  13800138000\r\n", "+8613800138000"),
        ("１３８００１３８０００", "+8613800138000"),  # full-width digits from a Chinese IME
        ("02888881234", "+862888881234"),
        ("028-8888-1234", "+862888881234"),
        ("010 12345678", "+861012345678"),
        ("0755-8888-1234", "+8675588881234"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("0014155550100", "+14155550100"),
        ("+44 7700 900123", "+447700900123"),
        ("+8613800138000", "+8613800138000"),
        ("1001", "ext:1001"),
        ("42", "ext:42"),
        ("800123", "ext:800123"),
        ("ext:1001", "ext:1001"),
        ("EXT:1001", "ext:1001"),
    ],
)
def test_normalise_table(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "anonymous",
        "Anonymous",
        "ANONYMOUS",
        "<unknown>",
        "unknown",
        "withheld",
        "restricted",
        "Private",
        "unavailable",
        "",
        "   ",
        None,
        "7",
        "+1234567",  # too short for E.164
        "+1234567890123456",  # too long
        "+0123456789",
        "138-0013-8000; DROP TABLE owners",
        '"13800138000"',
        "13800138000\nAction: Originate",
        "${SHELL(rm -rf /)}",
        "<script>alert(1)</script>",
        "1" * 10_000,
        "ext:1",
        "ext:1234567",
        "ext:12a",
        "++8613800138000",
        "86+13800138000",
    ],
)
def test_normalise_rejects(raw: str | None) -> None:
    assert normalise(raw) is None


def test_local_number_needs_area_code() -> None:
    assert normalise("88881234") is None
    assert normalise("88881234", area_code="028") == "+862888881234"
    assert normalise("8888123", area_code="28") == "+86288888123"


def test_other_country_settings() -> None:
    # A UK centre: trunk 0, international 00.
    assert normalise("020 7946 0018", country_code="44") == "+442079460018"
    assert normalise("0086 138 0013 8000", country_code="44") == "+8613800138000"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_normalise_total_and_canonical(raw: str) -> None:
    out = normalise(raw)
    assert out is None or CANONICAL.match(out), out
    if out is not None:
        assert normalise(out) == out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 +-.()", max_size=30))
def test_normalise_phone_like_idempotent(raw: str) -> None:
    out = normalise(raw)
    assert out is None or CANONICAL.match(out), out
    if out is not None:
        assert normalise(out) == out


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_every_mobile_form_is_one_key(mobile: str) -> None:
    forms = [mobile, "+86" + mobile, "0086" + mobile, "86" + mobile, f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}"]
    assert {normalise(f) for f in forms} == {"+86" + mobile}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("张伟", "张伟"),
        ("  Emma   Wilson ", "Emma Wilson"),
        ("evil\r\nAction: Hangup", "evil Action: Hangup"),
        ("abc\u202edcba", "abcdcba"),  # right-to-left override
        ("a\u200fb\u200ec", "abc"),  # RTL / LTR marks
        ("x\x00y\x1bz\x7f", "xyz"),
        ("a\u2028b", "a b"),
        (None, ""),
    ],
)
def test_safe_display_name(name: str | None, expected: str) -> None:
    assert safe_display_name(name) == expected


def test_safe_display_name_cuts() -> None:
    assert safe_display_name("名" * 10_000) == "名" * 64
    assert safe_display_name("a" * 100, max_len=10) == "a" * 10


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=0, max_value=100))
def test_safe_display_name_property(name: str, max_len: int) -> None:
    out = safe_display_name(name, max_len)
    assert len(out) <= max_len
    assert "\n" not in out and "\r" not in out
    assert not any(ch in out for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
    assert safe_display_name(out, max_len) == out
