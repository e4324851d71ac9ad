"""Property tests (hypothesis) on everything that reads input from outside: AMI and AGI parsers, the
AGI quoting, caller-ID normalisation, the owners CSV import and the HTTP API.

Each property is a promise the rest of the code relies on: parsers never raise anything but their
own documented error, quoting always round-trips through Asterisk's own splitting, the import is
all or nothing, and the API answers every request with JSON (never a 500). Crashes found here are
kept below as named regression tests. ``max_examples`` stays modest so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from sqlalchemy import select

from callcentre.agi.protocol import (
    AGIProtocolError,
    ReplyAssembler,
    build_command,
    parse_env,
    parse_reply,
    quote_arg,
    unquote_args,
)
from callcentre.ami.calls import CallState, CallTracker
from callcentre.ami.protocol import AMIValueRejected, encode_action, parse_message, sanitise_action
from callcentre.domain import callerid
from callcentre.sim.agi_client import parse_args

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text that includes the characters protocol code trips on: quotes, backslashes, CR/LF, NUL, ':'
# and the separators of both protocols, plus any unicode.
_NASTY = st.sampled_from(list(' \t"\\\r\n\x00:;,=|&$%{}()<>#*') + ["\r\n\r\n", ": ", "${EXTEN}", "HANGUP", "520-", "200 result="])
NASTY_TEXT = st.lists(st.one_of(st.text(max_size=8), _NASTY), max_size=12).map("".join)


# ------------------------------------------------------------------------------------------ AMI


AMI_EVENTS = [
    "Newchannel", "Newstate", "NewCallerid", "LocalBridge", "DialBegin", "DialEnd", "Hangup", "DTMFEnd",
    "BridgeEnter", "BridgeLeave", "QueueCallerJoin", "QueueCallerAbandon", "QueueCallerLeave",
    "OriginateResponse", "FullyBooted", "Shutdown", "CoreShowChannel", "VarSet", "",
]
AMI_KEYS = [
    "Event", "Uniqueid", "Linkedid", "Channel", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "DestUniqueid",
    "DestChannel", "DestLinkedid", "DialStatus", "DialString", "Cause", "Cause-txt", "Digit", "Direction",
    "BridgeUniqueid", "Queue", "HoldTime", "ActionID", "Response", "Reason", "Uptime", "LocalOneUniqueid",
    "LocalTwoUniqueid", "LocalOneChannel", "LocalTwoChannel", "Duration", "EventList", "Message",
]
_UIDS = st.sampled_from(["1795351990.1", "1795351990.2", "1795351990.3", "<unknown>", "", " ", "x"])
AMI_VALUE = st.one_of(_UIDS, st.sampled_from(["Up", "Ring", "ANSWER", "0", "-1", "00:01:02", "Received", "Sent", "#", "12"]), NASTY_TEXT)
AMI_FIELDS = st.dictionaries(
    st.one_of(st.sampled_from(AMI_KEYS), st.text(max_size=10)),
    st.one_of(AMI_VALUE, st.lists(AMI_VALUE, max_size=3)),
    max_size=10,
)


@FAST
@given(st.one_of(NASTY_TEXT, st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace"))))
def test_ami_parse_message_never_raises(block):
    message = parse_message(block)
    if message is not None:
        assert hasattr(message, "get")  # the library's Message: a mapping


@FAST
@given(st.lists(st.tuples(st.sampled_from(AMI_KEYS + ["X-Odd", "a"]), NASTY_TEXT), min_size=1, max_size=8))
def test_ami_parse_message_reads_back_what_asterisk_would_send(headers):
    """A block of well-formed ``Key: value`` lines parses; every single-valued key is found."""
    assume(all("\r" not in v and "\n" not in v for _, v in headers))
    block = "\r\n".join(f"{k}: {v}" for k, v in headers)
    message = parse_message(block)
    if message is None:
        return
    for key, _value in headers:
        assert key in message or key.lower() in {str(k).lower() for k in message}


@FAST
@given(st.lists(st.tuples(st.sampled_from(AMI_EVENTS), AMI_FIELDS), max_size=25), st.floats(0, 1e6))
def test_call_tracker_feed_never_raises_and_stays_consistent(events, t0):
    tracker = CallTracker(max_finished=5)
    at = t0
    for name, fields in events:
        message = dict(fields)
        if name:
            message["Event"] = name
        at += 0.5
        tracker.feed(message, at)
        open_ids = {r.uniqueid for r in tracker.open_calls()}
        finished_ids = {r.uniqueid for r in tracker.finished_calls()}
        assert not open_ids & finished_ids
        assert all(not r.finished for r in tracker.open_calls())
        assert all(r.state in (CallState.HUNG_UP, CallState.LOST) for r in tracker.finished_calls())
        assert len(finished_ids) <= 5
    # a resync with an arbitrary list never raises either, and leaves only what Asterisk listed
    listed = [dict(f, Event="CoreShowChannel") for _n, f in events[:5]]
    tracker.resync(listed, at + 1)
    assert all(not r.finished for r in tracker.open_calls())


@FAST
@given(st.dictionaries(st.text(max_size=12), st.one_of(NASTY_TEXT, st.integers(), st.booleans(), st.none()), max_size=6),
       NASTY_TEXT)
def test_ami_sanitise_either_rejects_or_encodes_exactly_one_action(fields, name):
    action: dict[str, Any] = {"Action": name, **fields}
    try:
        clean = sanitise_action(action, 256)
    except AMIValueRejected:
        return
    data = encode_action(clean)
    # exactly one blank line, at the end: no second action can be smuggled in
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\x00" not in data


# ------------------------------------------------------------------------------------------ AGI


HEADER_LINE = st.one_of(
    st.binary(max_size=80),
    st.tuples(st.sampled_from(["agi_network_script", "agi_uniqueid", "agi_callerid", "agi_arg_1", "agi_arg_x", "agi_arg_10", ""]),
              NASTY_TEXT).map(lambda kv: f"{kv[0]}: {kv[1]}\n".encode("utf-8", "surrogatepass")),
)


@FAST
@given(st.lists(HEADER_LINE, max_size=20))
def test_agi_parse_env_never_raises(lines):
    env = parse_env(lines)
    assert isinstance(env.script, str) and isinstance(env.args, tuple)
    assert env.malformed_lines >= 0 and env.decode_errors >= 0


REPLY_LINE = st.one_of(
    NASTY_TEXT,
    st.binary(max_size=60),
    st.builds(lambda c, r, d: f"{c} result={r}{d}", st.sampled_from(["200", "510", "511", "520", "999", "20"]),
              st.sampled_from(["0", "-1", "1", "49", "", "x"]), st.sampled_from(["", " (timeout)", " (dtmf) endpos=8000", " (a) b)", " (", " endpos=-"])),
)


@FAST
@given(REPLY_LINE)
def test_agi_parse_reply_raises_only_its_protocol_error(line):
    try:
        reply = parse_reply(line)
    except AGIProtocolError:
        return
    assert 0 <= reply.code <= 999
    if reply.code == 200:
        assert reply.result is not None


@FAST
@given(st.lists(st.one_of(REPLY_LINE.map(lambda x: x if isinstance(x, str) else x.decode("utf-8", "replace")),
                          st.just("520-Invalid command syntax.  Proper usage follows:"), st.just("520 End of proper usage."),
                          st.just("200 result=1 (line one")), max_size=80))
def test_agi_reply_assembler_raises_only_its_protocol_error(lines):
    assembler = ReplyAssembler()
    for line in lines:
        try:
            assembler.feed(line)
        except AGIProtocolError:
            assembler = ReplyAssembler()  # the channel closes the connection: a new one starts clean


ARG = st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=("Cs",)), max_size=30)


@FAST
@given(ARG)
@example('"; EXEC System rm')
@example("\\")
@example('a"b\\"c')
@example("")
@example(" ")
@example("\t")
def test_quote_arg_round_trips_through_asterisks_splitting(value):
    quoted = quote_arg(value)
    assert parse_args(quoted) == [value]
    assert unquote_args(quoted) == [value]


@FAST
@given(st.lists(ARG, max_size=8))
def test_build_command_arguments_come_back_one_for_one(args):
    try:
        data = build_command("SET VARIABLE", *args)
    except ValueError:
        assert len(" ".join(args).encode()) > 1500  # only refused for length
        return
    line = data.decode("utf-8")
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", *args]
    assert unquote_args(line[:-1]) == ["SET", "VARIABLE", *args]


@FAST
@given(st.text(st.sampled_from("\r\n\x00"), min_size=1, max_size=3), ARG, ARG)
def test_quote_arg_refuses_line_breaks_and_nul(bad, before, after):
    with pytest.raises(ValueError):
        quote_arg(before + bad + after)


# ------------------------------------------------------------------------------------ caller ID

_CANON = re.compile(r"^(\+[1-9][0-9]{7,14}|ext:[0-9]{2,6})$")


@FAST
@given(st.one_of(NASTY_TEXT, st.text(string.digits + "+- ().", max_size=25), st.none()))
@example("\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10")  # full-width digits
@example("+")
@example("00")
def test_callerid_normalise_is_total_canonical_and_idempotent(raw):
    out = callerid.normalise(raw, country_code="86", trunk_prefix="0", intl_prefix="00", area_code="028")
    if out is None:
        return
    assert _CANON.match(out), out
    assert callerid.normalise(out, country_code="86", trunk_prefix="0", intl_prefix="00", area_code="028") == out


@FAST
@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.lists(st.sampled_from(["", " ", "-", ".", "  "]), min_size=11, max_size=11))
def test_every_spelling_of_a_mobile_number_is_the_same_key(national, seps):
    spaced = "".join(d + s for d, s in zip(national, seps, strict=True)).strip(" -.")
    want = "+86" + national
    for spelling in (national, spaced, "+86" + national, "+86 " + spaced, "0086" + national, "86" + national, "0" + national):
        assert callerid.normalise(spelling, country_code="86", trunk_prefix="0", intl_prefix="00") == want, spelling


@FAST
@given(st.one_of(NASTY_TEXT, st.text(max_size=300), st.none()), st.integers(0, 80))
def test_safe_display_name_is_one_clean_line(name, max_len):
    out = callerid.safe_display_name(name, max_len)
    assert len(out) <= max_len
    assert not any(c in out for c in "\r\n\t\x00\x1b\u2028\u2029\u202e")
    assert out == out.strip()


# ------------------------------------------------------------------------------------ CSV import

COLUMNS = ["building", "unit", "owner_name", "phones", "fee_balance", "fee_due_date", "vip", "language", "role", "notes"]
CELL = {
    "building": st.one_of(st.sampled_from(["1", "2", "03", "A"]), NASTY_TEXT),
    "unit": st.one_of(st.sampled_from(["0101", "0102", "201", "1201"]), NASTY_TEXT),
    "owner_name": st.one_of(st.sampled_from(["Li Na", "王芳", "Chen"]), NASTY_TEXT),
    "phones": st.one_of(st.sampled_from(["13800001111", "138-0000-2222;028-8888-1234", "", "abc", "+1"]), NASTY_TEXT),
    "fee_balance": st.one_of(st.sampled_from(["0", "12.50", "-3", "1e5", "", "12.345"]), NASTY_TEXT),
    "fee_due_date": st.sampled_from(["", "2026-10-31", "2026-02-30", "31/10/2026"]),
    "vip": st.sampled_from(["", "yes", "no", "是", "maybe"]),
    "language": st.sampled_from(["", "zh", "en", "fr"]),
    "role": st.sampled_from(["", "owner", "tenant", "king"]),
    "notes": NASTY_TEXT,
}
CSV_ROW = st.fixed_dictionaries({c: CELL[c] for c in COLUMNS})


def _csv_text(rows: list[dict[str, str]], extra_junk: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r[c] for c in COLUMNS])
    return buf.getvalue() + extra_junk


async def _directory_snapshot(sessions: Any) -> tuple:
    from callcentre.storage.models import Owner, OwnerUnit, Phone, Unit

    async with sessions() as s:
        owners = (await s.execute(select(Owner.id, Owner.name, Owner.vip, Owner.language).order_by(Owner.id))).all()
        units = (await s.execute(select(Unit.id, Unit.building, Unit.unit, Unit.fee_balance_cents).order_by(Unit.id))).all()
        links = (await s.execute(select(OwnerUnit.owner_id, OwnerUnit.unit_id, OwnerUnit.role).order_by(OwnerUnit.owner_id, OwnerUnit.unit_id))).all()
        phones = (await s.execute(select(Phone.number, Phone.owner_id, Phone.unit_id).order_by(Phone.number, Phone.owner_id))).all()
    return tuple(map(tuple, owners)), tuple(map(tuple, units)), tuple(map(tuple, links)), tuple(map(tuple, phones))


def test_csv_import_is_all_or_nothing_on_random_rows(tmp_path):
    """Random rows, good and bad: either every row is in the directory, or ImportFailed names lines
    that exist in the file and the directory is byte-for-byte what it was."""
    from callcentre.config import DatabaseConfig
    from callcentre.owners_import import ImportFailed, import_owners
    from callcentre.storage import db
    from callcentre.storage.models import OwnerUnit, Unit
    from callcentre.storage.repo import canonical_label
    from tests.conftest import test_database_url

    loop = asyncio.new_event_loop()
    url = test_database_url(tmp_path)
    loop.run_until_complete(db.upgrade(url, progress=None))
    engine = db.create_engine(DatabaseConfig(url=url))
    sessions = db.session_factory(engine)
    counter = iter(range(10**6))

    @SLOW
    @given(st.lists(CSV_ROW, min_size=0, max_size=6), st.sampled_from(["", "\n", '"unclosed\n', "1,2\n", "\ufeff"]))
    def check(rows, junk):
        text = _csv_text(rows, junk)
        path = tmp_path / f"owners-{next(counter)}.csv"
        path.write_text(text, encoding="utf-8")
        before = loop.run_until_complete(_directory_snapshot(sessions))
        try:
            report = loop.run_until_complete(import_owners(sessions, path, country_code="86", trunk_prefix="0"))
        except ImportFailed as exc:
            assert exc.errors
            # lines as csv counts them (and as most editors do): \n, \r\n and a lone \r each end one
            physical_lines = len(io.StringIO(text, newline="").readlines()) + 1
            assert all(0 <= e.line <= physical_lines for e in exc.errors), exc.errors
            assert all(e.reason for e in exc.errors)
            assert loop.run_until_complete(_directory_snapshot(sessions)) == before
            return
        assert report.rows == len(rows)

        async def present() -> set[tuple[str, str]]:
            async with sessions() as s:
                found = (await s.execute(select(Unit.building, Unit.unit).join(OwnerUnit, OwnerUnit.unit_id == Unit.id))).all()
            return {(b, u) for b, u in found}

        have = loop.run_until_complete(present())
        for r in rows:
            assert (canonical_label(r["building"]), canonical_label(r["unit"])) in have

    try:
        check()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


# ------------------------------------------------------------------------------------ HTTP API

_CODE = re.compile(r"^[a-z][a-z_]*$")
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), NASTY_TEXT)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)), max_leaves=8)
API_KEYS = ["kind", "category", "priority", "phone", "call_uniqueid", "owner_id", "unit_id", "notes", "status",
            "resolved_first_contact", "agent_id", "mode", "action", "reason", "login", "password"]
API_BODY = st.one_of(
    st.dictionaries(st.sampled_from(API_KEYS), st.one_of(JSON_VALUE, st.sampled_from(["repair", "water", "major", "13800138000", "pause", "listen", "1"])), max_size=6),
    JSON_VALUE,
)
PATH_PARAM = st.one_of(st.sampled_from(["1", "0", "-1", "99999999999", "R20261124-0001", "%00", "..", "1.5"]), NASTY_TEXT)
ROUTES = [
    ("GET", "/api/me"), ("GET", "/api/queue"), ("GET", "/api/agents"), ("POST", "/api/agents/{p}/state"),
    ("POST", "/api/supervise"), ("GET", "/api/owners/lookup"), ("GET", "/api/owners/search"), ("GET", "/api/owners/{p}"),
    ("POST", "/api/owners/{p}/phones"), ("GET", "/api/tickets"), ("POST", "/api/tickets"), ("GET", "/api/tickets/{p}"),
    ("PATCH", "/api/tickets/{p}"), ("POST", "/api/logout"), ("POST", "/api/login"),
]
QUERY = st.dictionaries(st.sampled_from(["phone", "owner_id", "q", "limit", "x"]), st.one_of(PATH_PARAM, st.text(max_size=5)), max_size=3)


class _ApiHarness:
    """The web application on a migrated database, logged in as an admin, on its own event loop (so a
    synchronous hypothesis test can drive it one request at a time)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        from aiohttp import web
        from aiohttp.test_utils import TestClient, TestServer

        from callcentre.config import Config, DatabaseConfig, WebConfig
        from callcentre.domain.ports import SystemClock
        from callcentre.storage import db
        from callcentre.storage.users_repo import create_user
        from callcentre.web import setup_web
        from tests.conftest import test_database_url

        url = test_database_url(self.tmp_path)
        await db.upgrade(url, progress=None)
        self.cfg = Config(database=DatabaseConfig(url=url), web=WebConfig(session_key="fuzz-key-0123456789abcdef", login_attempts_per_minute=1000))
        self.engine = db.create_engine(self.cfg.database)
        sessions = db.session_factory(self.engine)
        await create_user(sessions, "admin", "Admin", "admin", "fuzz password 123", clock=SystemClock())

        class Services:
            cfg = self.cfg
            clock = SystemClock()
            session_factory = sessions
            engine = self.engine
            agi = ami = acd = hub = None

        app = web.Application()
        setup_web(app, Services())
        self.client = TestClient(TestServer(app))
        await self.client.start_server()
        resp = await self.client.post("/api/login", json={"login": "admin", "password": "fuzz password 123"})
        assert resp.status == 200, await resp.text()
        self.csrf = (await resp.json())["csrf"]

    async def _stop(self) -> None:
        await self.client.close()
        await self.engine.dispose()

    def __enter__(self) -> "_ApiHarness":
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.close()

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, Any, str]:
        headers = {"X-CSRF-Token": self.csrf}
        if body is not None:
            headers["Content-Type"] = content_type
        resp = await self.client.request(method, path, params=query, data=body, headers=headers)
        text = await resp.text()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return resp.status, data, text


def _check_api_answer(status: int, data: Any, text: str, what: str) -> None:
    assert status < 500 or status == 503, f"{what} -> {status}: {text[:300]}"
    assert data is not None, f"{what} -> {status}: not JSON: {text[:200]!r}"
    if status >= 400:
        err = data.get("error") if isinstance(data, dict) else None
        assert isinstance(err, dict) and isinstance(err.get("code"), str) and _CODE.match(err["code"]), f"{what} -> {text[:300]}"
        assert isinstance(err.get("message"), str)


def test_api_answers_every_random_request_with_json_and_a_stable_code(tmp_path):
    pytest.importorskip("callcentre.web.api", reason="the web layer is not importable")
    seen: set[int] = set()
    with _ApiHarness(tmp_path) as h:

        @settings(SLOW, max_examples=120)
        @given(st.sampled_from(ROUTES), PATH_PARAM, QUERY, st.one_of(API_BODY.map(lambda b: json.dumps(b).encode()), st.binary(max_size=40)),
               st.sampled_from(["application/json", "text/plain"]))
        def check(route, param, query, body, content_type):
            method, template = route
            path = template.replace("{p}", quote(param, safe="") or "x")
            send = body if method in ("POST", "PATCH") else None
            if template == "/api/logout":
                return  # would end the session the other examples use
            status, data, text = h.run(h.request(method, path, query=query, body=send, content_type=content_type))
            _check_api_answer(status, data, text, f"{method} {path} {query} {body[:60]!r}")
            seen.add(status)

        check()
    # the requests really reached the handlers: some were refused for their content, some served
    assert any(s in seen for s in (400, 404, 415)) and any(200 <= s < 300 for s in seen), seen


# ------------------------------------------------------------------------------------ regressions
# Crashes the properties above found become named tests here (see the report for each).
