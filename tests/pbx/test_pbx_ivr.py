"""Every IVR branch on the real PBX: what the caller heard, what was stored, what the server logged.

Callers here are driven by what they hear, as people are: each waits for the server to start a
prompt on its hotline leg (the ``AGIExecStart`` AMI event of that ``STREAM FILE`` / ``GET DATA``),
then its handset acts (``Setvar CC_T_n`` + ``Redirect`` of the handset half to ``[cc-test-handset]``,
so the digits are SendDTMF'd and the voice is Playback'ed by the handset itself). Keys therefore
always land while a prompt is playing: res_agi discards DTMF that arrives between two AGI commands,
and prompts played with no escape digits ignore it.

What the caller heard is judged from Asterisk's own ``agi set debug on`` lines (``pbx.agi_debug()``),
what was stored from the database, what was decided from the server's JSON log. Independent callers
share one world and run concurrently.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import wave
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from callcentre.domain import speech
from callcentre.storage.models import CallRow, Owner, OwnerUnit, TicketRow, Unit

# ------------------------------------------------------------------ a caller who reacts to prompts


def _prompt_of(command: str) -> str | None:
    """``STREAM FILE callcentre/zh/greeting 0123…`` → ``zh/greeting`` (GET DATA likewise)."""
    parts = command.split()
    if command.startswith(("STREAM FILE ", "GET DATA ")) and len(parts) >= 3:
        return parts[2].removeprefix("callcentre/")
    return None


class Caller:
    """One handset on a hotline call, acting on what the server plays to it."""

    def __init__(self, pbx: Any, number: str, name: str = "") -> None:
        self.pbx, self.number, self.name = pbx, number, name
        self.handset = self.leg = self.uniqueid = ""
        self._cursor = 0

    async def dial(self) -> Caller:
        self._cursor = len(self.pbx.ami.events)
        r = await self.pbx.call(self.number, [], name=self.name, hold=300)
        assert r.get("Response") == "Success", r
        self.handset = r["Channel"]  # Local/…;1, the caller's side
        self.leg = self.handset[:-2] + ";2"  # the hotline side that runs our AGI
        first = await self._next(lambda e: True, "the first AGI command", 15)
        self.uniqueid = first["Uniqueid"]
        return self

    async def _next(self, pred: Any, what: str, limit: float) -> dict[str, str]:
        def match(e: dict[str, str]) -> bool:
            return e.get("Event") == "AGIExecStart" and e.get("Channel") == self.leg and pred(e)

        try:
            ev = await self.pbx.ami.wait_for(match, limit, start=self._cursor)
        except AssertionError:
            raise AssertionError(f"{self.number} never heard {what}; heard {heard(self.pbx, self.leg)}") from None
        self._cursor = self.pbx.ami.events.index(ev) + 1
        return ev

    async def hears(self, prompt: str, limit: float = 60.0) -> dict[str, str]:
        """Wait until the server starts playing ``prompt`` (``zh/enter-building``) on this call."""
        return await self._next(lambda e: _prompt_of(e.get("Command", "")) == prompt, prompt, limit)

    async def recording_starts(self, limit: float = 30.0) -> dict[str, str]:
        return await self._next(lambda e: e.get("Command", "").startswith("RECORD FILE "), "RECORD FILE", limit)

    async def act(self, *steps: str) -> None:
        """Run these [cc-test-handset] steps now (``dtmf:1#``, ``play:hello-world``, ``hangup``)."""
        ami = self.pbx.ami
        for i, step in enumerate([*steps, ""], 1):
            r = await ami.action("Setvar", Channel=self.handset, Variable=f"CC_T_{i}", Value=step)
            assert r.get("Response") == "Success", r
        r = await ami.action("Redirect", Channel=self.handset, Context="cc-test-handset", Exten="s", Priority="1")
        assert r.get("Response") == "Success", r

    async def on(self, prompt: str, *steps: str, limit: float = 60.0) -> None:
        await self.hears(prompt, limit)
        await self.act(*steps)

    async def describe(self) -> None:
        """Speak after the beep, then '#': a recording with a voice in it."""
        await self.recording_starts()
        await self.act("play:hello-world", "dtmf:#")

    def heard(self) -> list[str]:
        return heard(self.pbx, self.leg)

    def log(self, event: str) -> list[dict[str, Any]]:
        return [ln for ln in self.pbx.server.lines if ln.get("event") == event and ln.get("uniqueid") == self.uniqueid]


# ------------------------------------------------------------------ reading Asterisk's own log

_AGI = re.compile(r"^\[(?P<ts>[^\]]+)\].*res_agi\.c: <(?P<chan>[^>]+)>AGI (?P<dir>Rx <<|Tx >>) ?(?P<text>.*)$")


def exchanges(pbx: Any, leg: str | None = None) -> list[tuple[str, str, str, str]]:
    """(channel, time of the command, command, reply) from ``agi set debug on``, in order."""
    out: list[list[str]] = []
    pending: dict[str, list[str]] = {}
    for line in pbx.agi_debug():
        m = _AGI.match(line)
        if m is None or (leg is not None and m["chan"] != leg):
            continue
        chan, text = m["chan"], m["text"]
        if m["dir"] == "Rx <<":
            pending[chan] = [chan, m["ts"], text, "", ""]
            out.append(pending[chan])
        elif chan in pending and not pending[chan][3] and text and text != "HANGUP" and not text.startswith("agi_"):
            pending[chan][3] = text
            pending[chan][4] = m["ts"]
    return [(c, ts, cmd, reply) for c, ts, cmd, reply, _ in out]


def heard(pbx: Any, leg: str) -> list[str]:
    """The prompts the server played on this leg, in order (``zh/greeting``, …)."""
    return [p for _, _, cmd, _ in exchanges(pbx, leg) if (p := _prompt_of(cmd))]


def index_of(seq: list[str], sub: list[str]) -> int:
    """Where ``sub`` occurs contiguously in ``seq`` (AssertionError with both if it does not)."""
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    raise AssertionError(f"{sub} not heard in order; heard {seq}")


def spoken(lang: str, names: list[str]) -> list[str]:
    return [f"{lang}/{n}" for n in names]


def read_back_number(h: list[str], lang: str) -> list[str]:
    """The prompts between ``ticket-created`` and ``promise-by``: the ticket number as read."""
    i = h.index(f"{lang}/ticket-created")
    j = h.index(f"{lang}/promise-by", i)
    return h[i + 1:j]


def assert_no_missing_prompt(pbx: Any) -> None:
    log = pbx.asterisk_log()
    bad = [ln for ln in log.splitlines() if "does not exist in any format" in ln or "Unable to open" in ln]
    assert not bad, bad[:5]


def assert_voice_file(pbx: Any, ticket: Any) -> float:
    """The ticket's recording is on the Asterisk host, in the record directory, with a voice in it."""
    assert ticket.voice_file, ticket
    path = Path(ticket.voice_file)
    assert path.parent == pbx.ast.record_dir, path
    assert path.is_file() and path.stat().st_size > 44, path
    with wave.open(str(path)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds > 0.5, (path, seconds)  # hello-world is about a second long
    return seconds


def turnaround(pbx: Any) -> list[float]:
    """Seconds from each reply of Asterisk to the server's next command on the same leg."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    from datetime import datetime

    last: dict[str, datetime] = {}
    gaps: list[float] = []
    for line in pbx.agi_debug():
        m = _AGI.match(line)
        if m is None or m["text"].startswith("agi_") or m["text"] in ("", "HANGUP"):
            continue
        t = datetime.strptime(m["ts"], fmt)
        if m["dir"] == "Tx >>":
            last[m["chan"]] = t
        elif m["chan"] in last:
            gaps.append((t - last.pop(m["chan"])).total_seconds())
    return gaps


def print_figures(pbx: Any, started: float, what: str) -> None:
    gaps = sorted(turnaround(pbx))
    if gaps:
        p95 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.95))]
        print(f"\n[{what}] wall {time.monotonic() - started:.1f} s; server turnaround over {len(gaps)} AGI replies: "
              f"median {statistics.median(gaps) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {gaps[-1] * 1000:.1f} ms")


async def select_rows(pbx: Any, model: Any, *where: Any) -> list[Any]:
    """Like ``pbx.rows`` for tables without an ``id`` column (calls)."""
    from sqlalchemy import select

    from callcentre.storage.db import session_factory
    async with session_factory(pbx.engine())() as s:
        return list((await s.execute(select(model).where(*where))).scalars())


async def call_row(pbx: Any, uniqueid: str, until: Any = None, limit: float = 30.0) -> Any:
    end = time.monotonic() + limit
    while True:
        rows = await select_rows(pbx, CallRow, CallRow.uniqueid == uniqueid)
        if rows and (until is None or until(rows[0])):
            return rows[0]
        if time.monotonic() > end:
            raise AssertionError(f"calls row {uniqueid}: {rows and vars(rows[0])}")
        await asyncio.sleep(0.2)


async def ticket_of(pbx: Any, caller: Caller, limit: float = 30.0) -> Any:
    end = time.monotonic() + limit
    while True:
        rows = await pbx.rows(TicketRow, TicketRow.call_uniqueid == caller.uniqueid)
        if rows or time.monotonic() > end:
            assert len(rows) == 1, (caller.number, rows)
            return rows[0]
        await asyncio.sleep(0.2)


async def unit_of(pbx: Any, owner_name: str) -> tuple[int, int]:
    from sqlalchemy import select

    from callcentre.storage.db import session_factory
    async with session_factory(pbx.engine())() as s:
        [(owner_id, unit_id)] = (await s.execute(
            select(Owner.id, OwnerUnit.unit_id).join(OwnerUnit, OwnerUnit.owner_id == Owner.id)
            .where(Owner.name == owner_name))).all()
    return owner_id, unit_id


# ------------------------------------------------------------------ world 1: who is calling

IDENT_OWNERS = """building,unit,owner_name,phones,fee_balance,fee_due_date,vip,language,pin,role,notes
1,0305,陈建国,138-0013-8001,1280.50,2026-10-31,no,zh,,owner,unit written with a leading zero
1,0301,刘秀英,139-1234-5602;137-7777-0000,356.80,2026-11-30,no,zh,,owner,shares 137-7777-0000
2,0502,周杰,131-0202-0202;137-7777-0000,0,,no,zh,,owner,shares 137-7777-0000
"""


@pytest.mark.pbx_world(owners=IDENT_OWNERS)
async def test_self_service_unknown_caller_and_shared_phone(pbx):
    """Self-service behind the unit guard, keyed ``0305`` and ``305``; an unknown caller keying in
    ``0305``; a phone shared by two owners choosing a unit by digit, and keying it in instead."""
    started = time.monotonic()
    chen_id, chen_unit = await unit_of(pbx, "陈建国")
    zhou_id, zhou_unit = await unit_of(pbx, "周杰")
    [stored] = await pbx.rows(Unit, Unit.id == chen_unit)
    print(f"\nunits file 1-0305 is stored as {stored.building}-{stored.unit}")

    # 陈建国 has a repair in progress: self-service reads its number and status
    from callcentre.domain.model import Priority, TicketDraft, TicketKind
    from callcentre.storage.db import session_factory
    from callcentre.storage.repo import SqlTicketStore
    seeded = await SqlTicketStore(session_factory(pbx.engine())).create_ticket(TicketDraft(
        kind=TicketKind.REPAIR, category="water", priority=Priority.GENERAL, caller_id_raw="13800138001",
        caller_id="+8613800138001", call_uniqueid="seeded-1", owner_id=chen_id, unit_id=chen_unit, source="agent"), None)

    async def self_service(keyed_unit: str) -> Caller:
        c = await Caller(pbx, "13800138001").dial()
        await c.on("zh/greeting", "dtmf:1")
        await c.on("zh/enter-building", "dtmf:1#")
        await c.on("zh/enter-unit", f"dtmf:{keyed_unit}#")
        await c.on("zh/you-entered", "dtmf:1")
        await c.hears("zh/status-new")
        await c.on("zh/main-menu-intro", "hangup")
        return c

    async def unknown_repair() -> Caller:
        c = await Caller(pbx, "13999999999").dial()
        await c.on("zh/greeting", "dtmf:2")
        await c.hears("zh/unknown-caller")
        await c.on("zh/enter-building", "dtmf:1#")
        await c.on("zh/enter-unit", "dtmf:0305#")
        await c.on("zh/you-entered", "dtmf:1")
        await c.on("zh/repair-menu-intro", "dtmf:3")
        await c.describe()
        await c.hears("zh/goodbye")
        return c

    async def shared_chooses() -> Caller:
        c = await Caller(pbx, "13777770000").dial()
        await c.on("zh/greeting", "dtmf:2")
        await c.hears("zh/phone-shared")
        await c.on("zh/press-2", "dtmf:2")  # listens to both units, then chooses the second
        await c.on("zh/repair-menu-intro", "dtmf:1")
        await c.describe()
        await c.hears("zh/goodbye")
        return c

    async def shared_keys_in() -> Caller:
        c = await Caller(pbx, "13777770000").dial()
        await c.on("zh/greeting", "dtmf:2")
        await c.hears("zh/choose-unit")  # says nothing: the menu times out
        await c.on("zh/enter-building", "dtmf:2#")
        await c.on("zh/enter-unit", "dtmf:0502#")
        await c.on("zh/you-entered", "dtmf:1")
        await c.on("zh/repair-menu-intro", "dtmf:4")
        await c.describe()
        await c.hears("zh/goodbye")
        return c

    ss0305, ss305, unknown, chooses, keys_in = await asyncio.gather(
        self_service("0305"), self_service("305"), unknown_repair(), shared_chooses(), shared_keys_in())
    await pbx.no_channels(40)

    # -- self-service: the balance, its due date and the open ticket, whichever way the unit was keyed
    balance = spoken("zh", ["fee-balance-is", *speech.amount(128050, "zh"), "fee-due-by",
                            *speech.date(date(2026, 10, 31), "zh"), "latest-ticket-is",
                            *speech.ticket_number(seeded.number, "zh"), "ticket-status-is", "status-new"])
    for c, keyed in ((ss0305, "0305"), (ss305, "305")):
        h = c.heard()
        assert "zh/unit-not-found" not in h, (keyed, h)
        [unit_reply] = [r for _, _, cmd, r in exchanges(pbx, c.leg) if "zh/enter-unit" in cmd]
        assert unit_reply == f"200 result={keyed}", unit_reply  # what Asterisk collected
        index_of(h, ["zh/enter-unit", "zh/you-entered", "zh/fee-balance-is"])  # confirmed at once with 1
        index_of(h, balance)
        [ident] = c.log("caller identified by unit")
        assert (ident["unit"], ident["owner_id"], ident["unit_id"]) == (keyed, chen_id, chen_unit)
        [read] = c.log("fee balance read")
        assert read["owner_id"] == chen_id
        row = await call_row(pbx, c.uniqueid, until=lambda r: r.outcome)
        assert row.outcome == "hung_up" and row.ivr_path.startswith(f"1>unit:1-{keyed}>ss"), vars(row)
        assert h.count("zh/greeting") == 1

    # -- the unknown caller keyed the unit as the owners file writes it
    t = await ticket_of(pbx, unknown)
    assert (t.kind, t.category, t.owner_id, t.unit_id, t.caller_id) == ("repair", "lift", chen_id, chen_unit,
                                                                       "+8613999999999")
    h = unknown.heard()
    assert "zh/unit-not-found" not in h
    assert read_back_number(h, "zh") == spoken("zh", speech.ticket_number(t.number, "zh"))
    assert_voice_file(pbx, t)

    # -- the shared phone: told why, offered both units by digit, chose the second
    t = await ticket_of(pbx, chooses)
    assert (t.owner_id, t.unit_id, t.category) == (zhou_id, zhou_unit, "water"), vars(t)
    h = chooses.heard()
    # the units as the directory stores them (1-0301 is unit 301 of building 1)
    menu = spoken("zh", ["phone-shared", "choose-unit", *speech.unit_address("1", "301", "zh"), "press-1",
                         *speech.unit_address("2", "502", "zh"), "press-2"])
    index_of(h, [*menu, "zh/repair-menu-intro"])
    assert "zh/enter-building" not in h
    assert t.ivr_path.startswith("2>unit:2-502>1>rec:dtmf"), t.ivr_path
    [chose] = chooses.log("caller chose a unit")
    assert (chose["digit"], chose["owner_id"]) == ("2", zhou_id)
    assert read_back_number(h, "zh") == spoken("zh", speech.ticket_number(t.number, "zh"))

    # -- the shared phone again, silent at the unit menu: keys the unit in, checked against its own units
    t = await ticket_of(pbx, keys_in)
    assert (t.owner_id, t.unit_id, t.category) == (zhou_id, zhou_unit, "doors"), vars(t)
    h = keys_in.heard()
    i = index_of(h, menu)
    assert h.index("zh/enter-building") > i and "zh/no-input" not in h and "zh/unit-not-found" not in h
    assert "2>shared:silence>unit:2-0502>4>rec:dtmf" in t.ivr_path, t.ivr_path
    assert_voice_file(pbx, t)

    assert_no_missing_prompt(pbx)
    print_figures(pbx, started, "identification world, 5 calls")


# ------------------------------------------------------------------ world 2: requests and people

AGENTS = {"agent1": "answer:2:15", "agent2": "answer:2:15", "agent3": "answer:2:15"}


@pytest.mark.pbx_world(agents=AGENTS, config={"acd": {"satisfaction_survey": False}})
async def test_repair_complaint_emergency_agent_menu_errors_and_english(pbx):
    """Known owners of examples/owners.csv: a repair, a complaint, an emergency (major ticket, then
    an agent), 0 for a person, wrong keys and silence until an agent, and English by 9."""
    started = time.monotonic()

    async def repair() -> Caller:  # 张伟, 1-1201: electrical
        c = await Caller(pbx, "13800138000", "Zhang Wei").dial()
        await c.on("zh/greeting", "dtmf:2")
        await c.on("zh/repair-menu-intro", "dtmf:2")
        await c.hears("zh/record-repair")
        await c.describe()
        await c.hears("zh/goodbye")
        return c

    async def complaint() -> Caller:  # 杨明, 1-0801: security
        c = await Caller(pbx, "13720000801").dial()
        await c.on("zh/greeting", "dtmf:3")
        await c.hears("zh/apology")
        await c.on("zh/complaint-menu-intro", "dtmf:5")
        await c.hears("zh/record-complaint")
        await c.describe()
        await c.hears("zh/goodbye")
        return c

    async def emergency() -> Caller:  # 赵磊, 1-1801: someone trapped in a lift
        c = await Caller(pbx, "15818001801").dial()
        await c.on("zh/greeting", "dtmf:8")
        await c.on("zh/emergency-menu-intro", "dtmf:2")
        await c.hears("zh/emergency-connecting")
        return c

    async def person() -> Caller:  # 周杰, 2-0202: 0
        c = await Caller(pbx, "13102020202").dial()
        await c.on("zh/greeting", "dtmf:0")
        await c.hears("zh/transfer-agent")
        return c

    async def fumbles() -> Caller:  # 吴婷, 2-0505: a wrong key, silence, a wrong key
        c = await Caller(pbx, "15005050505").dial()
        await c.on("zh/greeting", "dtmf:7")
        await c.hears("zh/invalid-choice")
        await c.hears("zh/main-menu-intro")
        await c.on("zh/no-input", "dtmf:7", limit=60)  # types over the apology: the key still counts
        await c.hears("zh/transfer-agent")
        return c

    async def english() -> Caller:  # 马超, 2-1601: 9, then a repair in English
        c = await Caller(pbx, "13316011601").dial()
        await c.on("zh/greeting", "dtmf:9")
        await c.hears("en/language-switched")
        await c.on("en/main-menu-intro", "dtmf:2")
        await c.on("en/repair-menu-intro", "dtmf:6")
        await c.describe()
        await c.hears("en/goodbye")
        return c

    rep, comp, emg, pers, fumb, eng = await asyncio.gather(
        repair(), complaint(), emergency(), person(), fumbles(), english())

    # -- the three who went to a person were answered by one each (the calls row says who)
    logins = set()
    for c, reason in ((emg, "emergency"), (pers, "caller-asked"), (fumb, "menu-attempts")):
        row = await call_row(pbx, c.uniqueid, until=lambda r: r.answered_by, limit=60)
        logins.add(row.answered_by)
        [to] = c.log("to agent")
        assert to["reason"] == reason, to
        await pbx.ami.wait_for("DialEnd", 5, Channel=c.leg, DialStatus="ANSWER")
    assert logins == set(AGENTS), logins

    # -- emergency: a major ticket made before the agent was rung, then the agent at once
    t = await ticket_of(pbx, emg)
    assert (t.kind, t.category, t.priority) == ("emergency", "lift_entrapment", "major"), vars(t)
    [to] = emg.log("to agent")
    assert to["emergency"] is True and to["skill"] == "repair"
    [made] = [x for x in emg.log("ticket created") if "promised_by" in x]  # the IVR's line (the store logs one too)
    assert made["ticket"] == t.number and made["timestamp"] < to["timestamp"]
    h = emg.heard()
    assert "zh/transfer-agent" not in h  # an emergency is not told to hold; it hears emergency-connecting
    index_of(h, ["zh/emergency-menu-intro", "zh/emergency-connecting"])  # 2 pressed during the intro

    # -- 0: a person, no ticket
    assert await pbx.rows(TicketRow, TicketRow.call_uniqueid == pers.uniqueid) == []

    # -- wrong key (during the greeting), silence, wrong key (during "no-input"): told twice, then a
    # person; the re-prompts repeat the menu, not the welcome
    h = fumb.heard()
    assert (h.count("zh/invalid-choice"), h.count("zh/no-input")) == (1, 1), h
    assert (h.count("zh/main-menu-intro"), h.count("zh/greeting")) == (1, 1), h
    index_of(h, ["zh/greeting", "zh/invalid-choice", "zh/main-menu-intro"])
    [(_, _, cmd, reply)] = [x for x in exchanges(pbx, fumb.leg) if "zh/no-input" in x[2]]
    assert cmd.endswith("0123456789*#") and reply.startswith("200 result=55 "), (cmd, reply)  # '7' stopped it
    rejected = fumb.log("menu input rejected")
    assert [(r["got"], r["attempt"]) for r in rejected] == [("7", 1), (None, 2), ("7", 3)]
    row = await call_row(pbx, fumb.uniqueid)
    assert await pbx.rows(TicketRow, TicketRow.call_uniqueid == fumb.uniqueid) == []

    # -- repair and complaint: category, recording on disk, the number read back as stored
    for c, kind, cat in ((rep, "repair", "electrical"), (comp, "complaint", "security")):
        t = await ticket_of(pbx, c)
        assert (t.kind, t.category, t.priority) == (kind, cat, "general"), vars(t)
        assert t.caller_id == "+86" + c.number and t.owner_id is not None and t.unit_id is not None
        h = c.heard()
        assert read_back_number(h, "zh") == spoken("zh", speech.ticket_number(t.number, "zh")), h
        seconds = assert_voice_file(pbx, t)
        print(f"{t.number}: recording {seconds:.2f} s")
        row = await call_row(pbx, c.uniqueid, until=lambda r: r.outcome)
        assert row.outcome == "done"
        [fresh] = await pbx.rows(TicketRow, TicketRow.id == t.id)
        assert fresh.acknowledged_to_caller is True  # heard through to the promise
    assert comp.heard().index("zh/apology") < comp.heard().index("zh/complaint-menu-intro")

    # -- English: everything after the switch is English, the number read in English
    t = await ticket_of(pbx, eng)
    assert (t.kind, t.category) == ("repair", "other")
    h = eng.heard()
    after = h[h.index("en/language-switched"):]
    assert all(p.startswith("en/") for p in after), after
    assert read_back_number(h, "en") == spoken("en", speech.ticket_number(t.number, "en"))
    assert "en/menu-english" not in after  # not offered again once in English
    assert_voice_file(pbx, t)

    assert_no_missing_prompt(pbx)
    print_figures(pbx, started, "requests world, 6 calls")


# ------------------------------------------------------------------ world 3: the PIN guard

@pytest.mark.pbx_world(config={"ivr": {"self_service_guard": "pin"}})
async def test_pin_guard_for_a_known_and_an_unknown_number(pbx):
    """``ivr.self_service_guard: pin``: 刘秀英 (1-0302, PIN 1357) from her own phone with a wrong PIN
    three times hears no balance; from a number we do not know she keys in her unit and then must
    give the PIN too (a keyed unit alone is not the PIN check)."""
    started = time.monotonic()

    async def wrong_pin() -> Caller:
        c = await Caller(pbx, "13912345602").dial()
        await c.on("zh/greeting", "dtmf:1")
        for _ in range(3):
            await c.on("zh/enter-pin", "dtmf:2468#")
            await c.hears("zh/pin-wrong")
        await c.on("zh/main-menu-intro", "hangup")
        return c

    async def unknown_with_pin() -> Caller:
        c = await Caller(pbx, "13900000000").dial()
        await c.on("zh/greeting", "dtmf:1")
        await c.hears("zh/unknown-caller")
        await c.on("zh/enter-building", "dtmf:1#")
        await c.on("zh/enter-unit", "dtmf:0302#")
        await c.on("zh/you-entered", "dtmf:1")
        await c.on("zh/enter-pin", "dtmf:1357#")
        await c.hears("zh/no-open-ticket")
        await c.on("zh/main-menu-intro", "hangup")
        return c

    wrong, unknown = await asyncio.gather(wrong_pin(), unknown_with_pin())
    h = wrong.heard()
    assert h.count("zh/pin-wrong") == 3 and "zh/fee-balance-is" not in h, h
    assert "zh/enter-building" not in h  # a known number is asked for the PIN only
    row = await call_row(pbx, wrong.uniqueid, until=lambda r: r.outcome)
    assert "1>ss:unverified" in row.ivr_path, row.ivr_path

    h = unknown.heard()
    i = index_of(h, ["zh/enter-pin", "zh/fee-balance-is", *spoken("zh", speech.amount(128050, "zh")), "zh/fee-due-by",
                     *spoken("zh", speech.date(date(2026, 10, 31), "zh"))])
    assert h.index("zh/you-entered") < i
    [read] = unknown.log("fee balance read")
    [owner_id] = [o.id for o in await pbx.rows(Owner, Owner.name == "刘秀英")]
    assert read["owner_id"] == owner_id
    assert_no_missing_prompt(pbx)
    print_figures(pbx, started, "PIN world, 2 calls")
