"""The hotline IVR: one coroutine per call over the :class:`~callcentre.domain.ports.Channel` port.

The flow (menu digits, categories, prompts, timeouts) comes from ``config.yaml`` (``ivr:``):

* greeting with the centre's name, then the main menu (Mandarin by default; a digit for English);
* **self-service**: fee balance and due date, guarded by the unit number or a PIN, and the status of
  the caller's latest open ticket;
* **repair** / **complaint**: a category by digit, a recorded description, a ticket whose number and
  promised time are read back (the ticket is committed before its number is spoken);
* **emergency**: a major ticket at once, then straight to an agent ahead of everyone;
* **agent**: hands the call to the :class:`AgentConnector` (call distribution);
* a wrong digit or silence re-prompts up to ``ivr.max_attempts`` times, then goes to an agent;
* an unknown caller keys in building and unit, hears them confirmed, and is treated as that owner.

The IVR never talks to sockets or the database directly: it uses the Channel, Directory and
TicketStore ports, so it is tested with fakes. A hang-up surfaces as :class:`CallerHungUp` (or the
task being cancelled by the AGI session); ticket writes are shielded so a request the caller has
finished describing is never half-made or lost.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Coroutine, Protocol, Sequence
from zoneinfo import ZoneInfo

import structlog

from callcentre.config.schema import Category, Config
from callcentre.domain import callerid, speech
from callcentre.domain.calls import CALLBACK_CATEGORY, CallInfo, Outcome, acknowledged, commit_shielded, hold
from callcentre.domain.hotlines import Hotline, Hotlines
from callcentre.domain.menu import MenuAction, menu_action
from callcentre.domain.model import OwnerMatch, Priority, Ticket, TicketDraft, TicketKind, TicketStatus
from callcentre.domain.ports import (
    CallerHungUp,
    Channel,
    ChannelError,
    Clock,
    Directory,
    StorageUnavailable,
    TicketStore,
)
from callcentre.domain.promises import promise_deadline

RESULT_VARIABLE = "CC_RESULT"
"""The dialplan sends the caller to the fallback queue unless this channel variable is ``done``."""


class AgentConnector(Protocol):
    """Puts the caller through to a person. Returns when the IVR's part of the call is over."""

    async def connect(
        self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool
    ) -> Outcome: ...


class DialplanQueueConnector:
    """Hands the caller back to the dialplan, which sends every call not marked done to its queue.

    Used when call distribution is switched off, and as the last resort when it fails.
    """

    async def connect(
        self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool
    ) -> Outcome:
        await ch.set_variable("CC_AGENT_REASON", reason)
        return Outcome.AGENT


_UNIT_DIGITS = re.compile(r"^[0-9]+$")
_MAX_UNIT_CHOICES = 9
"""A shared phone's units are offered as a menu (digits 1-9) up to this many; more are keyed in."""


class HotlineIVR:
    def __init__(
        self,
        cfg: Config,
        directory: Directory,
        tickets: TicketStore,
        clock: Clock,
        connector: AgentConnector | None = None,
        hotline: Hotline | None = None,
    ) -> None:
        self.cfg = cfg
        # One IVR per hotline (HotlineRouter picks it by the number dialled): its menu, prompts and name.
        self.hotline = hotline or Hotlines.from_config(cfg).default
        self.ivr = self.hotline.ivr
        self.directory = directory
        self.tickets = tickets
        self.clock = clock
        self.connector = connector or DialplanQueueConnector()
        self.tz = ZoneInfo(cfg.centre.timezone)
        self._fallback = DialplanQueueConnector()
        self._pending: set[asyncio.Task] = set()
        # The configuration names the actions; the flow works with the enum (one definition: domain/menu.py).
        self._menu: dict[str, MenuAction] = {d: menu_action(a) for d, a in self.ivr.menu.items()}

    # ------------------------------------------------------------------ entry point

    async def run(self, ch: Channel) -> Outcome:
        call = CallInfo(
            uniqueid=ch.uniqueid,
            channel=ch.channel_name,
            caller_id_raw=ch.caller_id,
            caller_id=callerid.normalise(
                ch.caller_id,
                country_code=self.cfg.centre.country_code,
                trunk_prefix=self.cfg.centre.trunk_prefix,
                intl_prefix=self.cfg.centre.international_prefix,
                area_code=self.cfg.centre.area_code,
            ),
            caller_name=callerid.safe_display_name(ch.caller_name or ""),
            language=self.ivr.default_language,
            hotline=self.hotline,
        )
        log = structlog.get_logger("callcentre.ivr").bind(
            uniqueid=ch.uniqueid, channel=ch.channel_name, caller=call.caller_id or "withheld", hotline=self.hotline.id
        )
        call.log = log
        outcome: Outcome | None = None
        try:
            outcome = await self._run(ch, call, log)
            return outcome
        except CallerHungUp:
            log.info("caller hung up", path=call.ivr_path)
            outcome = Outcome.HUNG_UP
            return outcome
        except asyncio.CancelledError:
            # A hang-up while idle cancels us; so does a server stop, and then the caller is still
            # there: leaving CC_RESULT unset sends them to the dialplan's fallback queue.
            outcome = Outcome.HUNG_UP if ch.hung_up else None
            raise
        finally:
            await self._finish(ch, call, outcome, log)

    async def _run(self, ch: Channel, call: CallInfo, log) -> Outcome:
        await ch.answer()
        log.info("call answered", caller_raw=call.caller_id_raw, caller_name=call.caller_name)
        # Read now, not when a ticket is made: after a recording the next await may already be a hang-up.
        try:
            call.linkedid = await ch.get_variable("CHANNEL(linkedid)") or None
        except ChannelError:
            call.linkedid = None
        try:
            if call.caller_id:
                call.matches = await self.directory.find_by_phone(call.caller_id)
        except StorageUnavailable as exc:
            log.error("directory unavailable, sending caller to an agent", error=str(exc))
            call.path.append("db-down")
            await self._say(ch, call, ["system-busy-agent"])
            return await self._to_agent(ch, call, reason="storage-unavailable", skill=None)
        if len(call.matches) == 1:
            call.owner = call.matches[0]
        # The call's row is a record for supervisors, not something the caller is told: the greeting
        # does not wait for its commit (the writer keeps the order of a call's events).
        self._background(self.tickets.record_call_event(
            call.uniqueid,
            "started",
            {
                "linkedid": call.linkedid,
                "caller_id_raw": call.caller_id_raw,
                "caller_id": call.caller_id,
                "owner_id": call.owner.owner_id if call.owner else None,
                "started_at": self.clock.now(),
                "hotline": call.hotline_id,
            },
        ), log)
        langs = {m.language for m in call.matches if m.language}
        if len(langs) == 1:
            call.language = langs.pop() or call.language
        log.info("caller identified" if call.matches else "caller not in directory", matches=len(call.matches))
        return await self._main_menu(ch, call, greet=True)

    async def _finish(self, ch: Channel, call: CallInfo, outcome: Outcome | None, log) -> None:
        """Runs once per call, whatever happened: tells the dialplan and records the call.

        ``outcome`` None: the session was interrupted (server stopping) with the caller still on
        the line; CC_RESULT stays unset so the dialplan's fallback queue takes them."""
        if outcome in (Outcome.DONE, Outcome.HUNG_UP):
            # SET VARIABLE still works on a dead channel; a caller who hung up must not be queued.
            try:
                await ch.set_variable(RESULT_VARIABLE, "done", allow_dead=True)
            except (CallerHungUp, ChannelError):
                pass
        try:
            await asyncio.shield(
                self.tickets.record_call_event(
                    call.uniqueid,
                    "ivr-finished",
                    {
                        "outcome": outcome.value if outcome else "interrupted",
                        "ivr_path": call.ivr_path,
                        "caller_id_raw": call.caller_id_raw,
                        "caller_id": call.caller_id,
                        "owner_id": call.owner.owner_id if call.owner else None,
                        "tickets": list(call.tickets),
                    },
                )
            )
        except (StorageUnavailable, asyncio.CancelledError):
            log.warning("call record not saved", outcome=outcome.value if outcome else "interrupted")
        if outcome is None:
            log.warning("ivr interrupted with the caller on the line; the dialplan's fallback queue takes them",
                        path=call.ivr_path)
        else:
            log.info("ivr finished", outcome=outcome.value, path=call.ivr_path, tickets=call.tickets)

    # ------------------------------------------------------------------ prompts

    def _p(self, call: CallInfo, names: Sequence[str]) -> list[str]:
        """Prefix the caller's language (a name that already names its language keeps it), from the
        hotline's own recordings where it has one (domain/hotlines.py)."""
        return [call.prompt(n) for n in names]

    async def _say(self, ch: Channel, call: CallInfo, names: Sequence[str]) -> None:
        await ch.play(self._p(call, names))

    async def _choose(
        self, ch: Channel, call: CallInfo, intro: Sequence[str], options: dict[str, Sequence[str]], *, label: str,
        once: Sequence[str] = (), attempts: int | None = None,
    ) -> str | None:
        """Play a menu and return a valid digit, or None after ``attempts`` (default
        ``ivr.max_attempts``) wrong or silent tries. ``once`` (the greeting) is played before the
        first try only: a re-prompt repeats the menu, not the welcome."""
        menu: list[str] = list(intro)
        for digit, item in options.items():
            menu.extend(item)
            if not any(n.endswith(_press(digit)) for n in item):
                menu.append(_press(digit))
        tries = attempts or self.ivr.max_attempts
        lead: list[str] = list(once)
        for attempt in range(1, tries + 1):
            # The apology for a failed try leads the next one and takes keys like the menu does: on a
            # real PBX a key pressed during a prompt played without escape digits is lost.
            result = await ch.get_digits(self._p(call, [*lead, *menu]), self.ivr.digit_timeout_ms, 1)
            digit = result.digits[:1]
            if digit in options:
                return digit
            call.log.info("menu input rejected", menu=label, got=digit or None, attempt=attempt)
            call.path.append(f"{label}:{'?' if digit else 'silence'}")
            lead = ["invalid-choice" if digit else "no-input"]
        return None

    async def _enter_number(
        self, ch: Channel, call: CallInfo, prompt: str, max_digits: int, lead: Sequence[str] = ()
    ) -> str | None:
        """Collect a number ended by '#' or the timeout; only digits are kept. ``lead`` prompts come
        first and can be typed over too (a caller who knows what comes next need not wait)."""
        result = await ch.get_digits(self._p(call, [*lead, prompt]), self.ivr.digit_timeout_ms, max_digits)
        digits = result.digits.rstrip("#")
        return digits if _UNIT_DIGITS.match(digits) else None

    # ------------------------------------------------------------------ main menu

    def _menu_options(self, call: CallInfo) -> dict[str, list[str]]:
        options = {}
        for d, action in self._menu.items():
            if action is MenuAction.ENGLISH:
                if call.language == "en":
                    continue  # already in English: no point offering it
                # Offered in English to someone who does not understand the rest of the menu.
                options[d] = [f"en/{action.prompt}", f"en/{_press(d)}"]
            else:
                options[d] = [action.prompt]
        return options

    async def _main_menu(self, ch: Channel, call: CallInfo, greet: bool) -> Outcome:
        once = ["greeting"] if greet else []
        while True:
            digit = await self._choose(ch, call, ["main-menu-intro"], self._menu_options(call), label="menu", once=once)
            if digit is None:
                call.path.append("menu:max-attempts")
                return await self._to_agent(ch, call, reason="menu-attempts", skill=None)
            action = self._menu[digit]
            call.path.append(digit)
            call.log.info("menu choice", digit=digit, action=action.value)
            once = []
            if action is MenuAction.ENGLISH:
                call.language = "en"
                await self._say(ch, call, ["language-switched"])
                continue
            if action is MenuAction.REPEAT:
                continue
            if action is MenuAction.SELF_SERVICE:
                await self._self_service(ch, call)
                continue
            if action is MenuAction.EMERGENCY:
                return await self._emergency(ch, call)
            if action.ticket_kind is not None:  # repair, complaint: a category, a recording, a ticket
                return await self._request(ch, call, action)
            return await self._to_agent(ch, call, reason="caller-asked", skill=action.skill)

    # ------------------------------------------------------------------ identification

    async def _identify_by_unit(
        self, ch: Channel, call: CallInfo, among: list[OwnerMatch] | None, optional: bool = False,
        lead: Sequence[str] = (),
    ) -> OwnerMatch | None:
        """Building + unit keyed in and confirmed. ``among`` limits the answer to the caller's own units.

        The directory decides whether what was keyed names a unit (``0305`` and ``305`` are the same
        unit there), for the caller's own units too: the IVR never compares labels itself.

        When ``optional``, a caller who keys nothing in is let through at once (they may not know or
        want to give their unit to report a problem in a public area)."""
        for attempt in range(self.ivr.max_attempts):
            building = await self._enter_number(ch, call, "enter-building", self.ivr.building_entry_max_digits,
                                                lead=lead if attempt == 0 else ())
            if building is None:
                if optional:
                    call.path.append("unit:skipped")
                    return None
                await self._say(ch, call, ["no-input"])
                continue
            unit = await self._enter_number(ch, call, "enter-unit", self.ivr.unit_entry_max_digits)
            if unit is None:
                await self._say(ch, call, ["no-input"])
                continue
            spoken = speech.unit_address(building, unit, call.language)
            if not await self._confirm(ch, call, ["you-entered", *spoken]):
                continue
            try:
                found = await self.directory.find_unit(building, unit)
            except StorageUnavailable as exc:
                call.log.error("unit look-up failed", error=str(exc), building=building, unit=unit)
                call.path.append("unit:db-down")
                return None
            if among is not None:
                units = {m.unit_id for m in found}
                found = [m for m in among if m.unit_id in units]
            if found:
                call.path.append(f"unit:{building}-{unit}")
                call.log.info("caller identified by unit", building=building, unit=unit, owner_id=found[0].owner_id,
                              unit_id=found[0].unit_id, stored_as=f"{found[0].building}-{found[0].unit}")
                return found[0]
            call.log.info("unit not found", building=building, unit=unit, among=None if among is None else len(among))
            await self._say(ch, call, ["unit-not-found"])
        return None

    async def _confirm(self, ch: Channel, call: CallInfo, what: list[str]) -> bool:
        result = await ch.get_digits(self._p(call, [*what, "confirm-or-retry"]), self.ivr.digit_timeout_ms, 1)
        return result.digits[:1] == "1"

    async def _ensure_owner(self, ch: Channel, call: CallInfo, optional: bool = False) -> OwnerMatch | None:
        """Identify the caller: a shared phone picks one of its units, an unknown one keys in any unit."""
        if call.owner is not None:
            return call.owner
        if call.matches:
            owner = await self._pick_shared_unit(ch, call, optional=optional)
        else:
            # Played on its own, not typed over: the simulator's scripted callers (tests/test_e2e_hotline.py)
            # take one input per prompt that accepts keys.
            await self._say(ch, call, ["unknown-caller"])
            owner = await self._identify_by_unit(ch, call, among=None, optional=optional)
        call.owner = owner
        return owner

    async def _pick_shared_unit(self, ch: Channel, call: CallInfo, optional: bool) -> OwnerMatch | None:
        """The caller's number belongs to more than one owner or unit.

        One unit (people living together): that unit, nothing to ask. Several: the caller hears
        why they are asked (``phone-shared``), then a menu of the units ("1-0301, press 1; 2-0502,
        press 2", read by :func:`speech.unit_address`); no valid choice, more than nine units, or a
        label the keypad cannot speak: they key the unit in, checked against this number's units."""
        units = _distinct_units(call.matches)
        if len(units) == 1:
            call.path.append("unit:phone")
            call.log.info("shared phone, one unit", unit_id=units[0].unit_id, owners=len(call.matches),
                          owner_id=units[0].owner_id)
            return units[0]
        call.log.info("shared phone: asking which unit", units=len(units))
        if len(units) <= _MAX_UNIT_CHOICES and all(speech.can_say_address(m.building, m.unit) for m in units):
            options = {str(i): speech.unit_address(m.building, m.unit, call.language) for i, m in enumerate(units, 1)}
            digit = await self._choose(ch, call, ["choose-unit"], options, label="shared", attempts=1,
                                       once=["phone-shared"])
            if digit is not None:
                chosen = units[int(digit) - 1]
                call.path.append(f"unit:{chosen.building}-{chosen.unit}")
                call.log.info("caller chose a unit", digit=digit, owner_id=chosen.owner_id, unit_id=chosen.unit_id)
                return chosen
            lead: list[str] = []
        else:
            lead = ["phone-shared"]
        return await self._identify_by_unit(ch, call, among=call.matches, optional=optional, lead=lead)

    # ------------------------------------------------------------------ self-service

    async def _self_service(self, ch: Channel, call: CallInfo) -> None:
        guard = self.ivr.self_service_guard
        if guard == "unit" and call.matches:
            # Caller ID can be spoofed: a known number keys in its unit too, checked against the
            # number's own units (for a shared number this also says which unit).
            owner = await self._identify_by_unit(ch, call, among=[call.owner] if call.owner else call.matches)
        else:
            # An unknown number keys in its unit (with guard "unit", that is the check); a shared
            # number picks one of its units.
            owner = await self._ensure_owner(ch, call)
        verified = owner is not None
        if owner is not None and guard == "pin" and owner.has_pin:
            verified = await self._check_pin(ch, call, owner)
        if owner is None or not verified:
            call.path.append("ss:unverified")
            return
        call.owner = owner
        call.path.append("ss")
        lang = call.language
        if owner.fee_balance_cents > 0:
            words = ["fee-balance-is", *speech.amount(owner.fee_balance_cents, lang)]
            if owner.fee_due_date is not None:
                words += ["fee-due-by", *speech.date(owner.fee_due_date, lang)]
        else:
            words = ["fee-nothing-owed"]
        await self._say(ch, call, words)
        call.log.info("fee balance read", owner_id=owner.owner_id, unit_id=owner.unit_id)
        try:
            ticket = await self.tickets.latest_open_ticket(owner.owner_id, call.caller_id)
        except StorageUnavailable:
            ticket = None
        if ticket is None:
            await self._say(ch, call, ["no-open-ticket"])
        else:
            await self._say(
                ch,
                call,
                ["latest-ticket-is", *speech.ticket_number(ticket.number, lang), "ticket-status-is", f"status-{ticket.status.value}"],
            )

    async def _check_pin(self, ch: Channel, call: CallInfo, owner: OwnerMatch) -> bool:
        for _ in range(self.ivr.max_attempts):
            pin = await self._enter_number(ch, call, "enter-pin", 8)
            if pin and await self.directory.check_pin(owner.owner_id, pin):
                return True
            await self._say(ch, call, ["pin-wrong"])
        return False

    # ------------------------------------------------------------------ repair / complaint / emergency

    async def _request(self, ch: Channel, call: CallInfo, action: MenuAction) -> Outcome:
        kind = action.ticket_kind
        assert kind is not None
        cats = self.ivr.repair_categories if kind is TicketKind.REPAIR else self.ivr.complaint_categories
        intro = "repair-menu-intro" if kind is TicketKind.REPAIR else "complaint-menu-intro"
        if kind is TicketKind.COMPLAINT:
            await self._say(ch, call, ["apology"])
        if call.owner is None:
            # Optional for requests: if the caller cannot give a unit, a ticket with only their
            # number is still a ticket.
            await self._ensure_owner(ch, call, optional=True)
        digit = await self._choose(ch, call, [intro], {d: [c.prompt] for d, c in cats.items()}, label=kind.value)
        if digit is None:
            return await self._to_agent(ch, call, reason=f"{kind.value}-attempts", skill=action.skill)
        category = cats[digit]
        call.path.append(digit)
        voice_file: str | None = None
        hung_up = False
        try:
            voice_file = await self._record(ch, call, f"record-{kind.value}", kind.value)
        except CallerHungUp:
            hung_up = True  # what they said so far is kept: the ticket is still made
            voice_file = call.recording  # None if they hung up before the recording started
            call.path.append("rec:hangup")
        ticket = await self._make_ticket(ch, call, kind, category, voice_file, hung_up=hung_up)
        if ticket is None:
            return await self._to_agent(ch, call, reason="ticket-not-saved", skill=category.skill)
        await self._read_back(ch, call, ticket)
        await self._say(ch, call, ["thank-you", "goodbye"])
        return Outcome.DONE

    async def _emergency(self, ch: Channel, call: CallInfo) -> Outcome:
        cats = self.ivr.emergency_categories
        digit = await self._choose(ch, call, ["emergency-menu-intro"], {d: [c.prompt] for d, c in cats.items()}, label="emergency")
        category = cats[digit] if digit is not None else Category(code="unspecified", prompt="menu-emergency", priority="major")
        call.path.append(digit or "emg:unspecified")
        branch = MenuAction.EMERGENCY.branch
        assert branch.ticket_kind is not None
        await self._make_ticket(ch, call, branch.ticket_kind, category, None, priority=branch.priority)
        await self._say(ch, call, ["emergency-connecting"])
        return await self._to_agent(ch, call, reason="emergency", skill=category.skill, emergency=branch.emergency)

    def _record_path(self, call: CallInfo, what: str) -> str:
        day = self.clock.now().astimezone(self.tz).strftime("%Y%m%d")
        safe_id = re.sub(r"[^0-9A-Za-z]", "-", call.uniqueid)
        # One flat directory (created once at set-up, docs/asterisk.md): RECORD FILE is not relied on
        # to create missing directories.
        return f"{self.ivr.record_dir.rstrip('/')}/{day}-{safe_id}-{what}"

    async def _record(self, ch: Channel, call: CallInfo, prompt: str, what: str) -> str:
        await self._say(ch, call, [prompt])
        path = self._record_path(call, what)
        call.recording = f"{path}.{self.ivr.record_format}"  # RECORD FILE is being sent: Asterisk writes this file
        result = await ch.record(path, self.ivr.record_format, self.ivr.record_max_seconds, self.ivr.record_silence_seconds)
        call.path.append(f"rec:{result.ended_by}")
        call.log.info("message recorded", file=path, ended_by=result.ended_by, endpos=result.endpos)
        return f"{path}.{self.ivr.record_format}"

    async def _make_ticket(
        self,
        ch: Channel,
        call: CallInfo,
        kind: TicketKind,
        category: Category,
        voice_file: str | None,
        *,
        priority: Priority | None = None,
        hung_up: bool = False,
    ) -> Ticket | None:
        # No await may come before the ticket task is started: a hang-up right after the recording
        # must not lose what the caller said.
        prio = priority or Priority(category.priority)
        draft = call.ticket_draft(kind, category.code, prio, voice_file=voice_file,
                                  source="ivr-hangup" if hung_up else "ivr")
        deadline = promise_deadline(self.cfg.tickets.promises, prio, category.code, self.clock.now())
        try:
            ticket = await commit_shielded(self.tickets, draft, deadline, self._pending)
        except StorageUnavailable as exc:
            call.log.error("ticket not saved", error=str(exc), kind=kind.value, category=category.code, draft=_draft_log(draft))
            if not hung_up:
                await self._say(ch, call, ["system-busy-agent"])
            return None
        call.tickets.append(ticket.number)
        call.log = call.log.bind(ticket=ticket.number)
        call.log.info("ticket created", ticket=ticket.number, kind=kind.value, category=category.code, priority=prio.value,
                      owner_id=draft.owner_id, promised_by=deadline.isoformat())
        if hung_up:
            raise CallerHungUp()
        return ticket

    async def _read_back(self, ch: Channel, call: CallInfo, ticket: Ticket) -> None:
        lang = call.language
        words = ["ticket-created", *speech.ticket_number(ticket.number, lang)]
        if ticket.promised_by is not None:
            local = ticket.promised_by.astimezone(self.tz)
            words.append("promise-by")
            if local.date() != self.clock.now().astimezone(self.tz).date():
                words += speech.date(local.date(), lang)
            words += speech.clock_time(local.hour, local.minute, lang)
        await self._say(ch, call, words)
        await acknowledged(self.tickets, ticket, call.log)

    # ------------------------------------------------------------------ agents

    async def _to_agent(self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool = False) -> Outcome:
        if not emergency:
            await self._say(ch, call, ["transfer-agent"])
        call.log.info("to agent", reason=reason, skill=skill, emergency=emergency)
        try:
            outcome = await self.connector.connect(ch, call, reason=reason, skill=skill, emergency=emergency)
        except (ChannelError, StorageUnavailable) as exc:
            call.log.error("call distribution failed, falling back to the dialplan queue", error=str(exc))
            return await self._fallback.connect(ch, call, reason="acd-error", skill=skill, emergency=emergency)
        if outcome is Outcome.MESSAGE:
            return await self._take_message(ch, call, reason)
        return outcome

    async def take_message(self, ch: Channel, call: CallInfo, reason: str) -> Outcome:
        """A voice message that becomes a call-back ticket, for a caller no person could take (a transfer
        whose target did not answer, with ``transfers.no_answer: message``)."""
        return await self._take_message(ch, call, reason)

    async def _take_message(self, ch: Channel, call: CallInfo, reason: str) -> Outcome:
        """Nobody can answer now (no agent, night, maximum wait): a voice message becomes a ticket."""
        call.path.append("message")
        category = Category(code=CALLBACK_CATEGORY, prompt="leave-message")
        voice_file: str | None = None
        hung_up = False
        try:
            voice_file = await self._record(ch, call, "leave-message", "message")
        except CallerHungUp:
            hung_up = True
            voice_file = call.recording
        ticket = await self._make_ticket(ch, call, TicketKind.MESSAGE, category, voice_file, hung_up=hung_up)
        if ticket is None:
            return await self._fallback.connect(ch, call, reason="message-not-saved", skill=None, emergency=False)
        await self._say(ch, call, ["message-saved"])
        await self._read_back(ch, call, ticket)
        await self._say(ch, call, ["goodbye"])
        return Outcome.DONE

    def _background(self, write: Coroutine[Any, Any, None], log: Any) -> None:
        """Run a best-effort record in a task of its own, held until done (so a drain waits for it)."""

        def failed(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("call record failed", error=repr(t.exception()))

        hold(write, self._pending).add_done_callback(failed)

    async def drain(self) -> None:
        """Wait for ticket and call-record writes still in flight (called at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _distinct_units(matches: Sequence[OwnerMatch]) -> list[OwnerMatch]:
    """One match per unit, in the directory's order (the first person listed for each unit)."""
    seen: set[int] = set()
    out: list[OwnerMatch] = []
    for m in matches:
        if m.unit_id not in seen:
            seen.add(m.unit_id)
            out.append(m)
    return out


def _press(digit: str) -> str:
    return {"*": "press-star", "#": "press-hash"}.get(digit, f"press-{digit}")


def _draft_log(d: TicketDraft) -> dict[str, object]:
    """Everything needed to re-create a ticket by hand from the log if the database stayed down."""
    return {
        "kind": d.kind.value,
        "category": d.category,
        "priority": d.priority.value,
        "caller_id_raw": d.caller_id_raw,
        "caller_id": d.caller_id,
        "uniqueid": d.call_uniqueid,
        "owner_id": d.owner_id,
        "unit_id": d.unit_id,
        "voice_file": d.voice_file,
        "ivr_path": d.ivr_path,
    }


def required_prompts(cfg: Config) -> set[str]:
    """Every prompt name this IVR can play with this configuration (checked by the tests)."""
    names = {
        "greeting", "main-menu-intro", "invalid-choice", "no-input", "transfer-agent", "goodbye", "thank-you",
        "system-busy-agent", "unknown-caller", "enter-building", "enter-unit", "you-entered", "building",
        "unit-word", "confirm-or-retry", "unit-not-found", "enter-pin", "pin-wrong", "fee-balance-is",
        "fee-nothing-owed", "fee-due-by", "no-open-ticket", "latest-ticket-is", "ticket-status-is",
        "repair-menu-intro", "complaint-menu-intro", "emergency-menu-intro", "record-repair", "record-complaint",
        "ticket-created", "promise-by", "emergency-connecting", "apology", "language-switched", "menu-emergency",
        "leave-message", "message-saved", "phone-shared", "choose-unit",
        # call distribution: the wait script (callcentre/domain/waiting.py)
        "queue-position", "queue-expected-wait", "minutes-word", "callback-offer", "callback-registered",
        "no-agents", "closed-hours", "max-wait-reached", "rate-service", "thanks-rating", "please-wait",
        # call recording: "this call may be recorded" (callcentre/distribution/recording.py)
        "call-recorded",
    }
    names |= {f"status-{s.value}" for s in TicketStatus}
    names |= {_press(d) for d in "0123456789*#"}
    for ivr in {id(h.ivr): h.ivr for h in Hotlines.from_config(cfg)}.values():  # every hotline's menu
        names |= {menu_action(a).prompt for a in ivr.menu.values()}
        for cats in (ivr.repair_categories, ivr.complaint_categories, ivr.emergency_categories):
            names |= {c.prompt for c in cats.values()}
    names |= set(speech.ALL_PROMPTS)
    return names


class HotlineRouter:
    """Several hotlines in one server: one :class:`HotlineIVR` per hotline, and each call to the IVR of the
    number the caller dialled (the ``hotline`` script's argument, the DID; domain/hotlines.py). With one
    hotline (no ``hotlines:`` in the configuration) every call goes to it, as before."""

    def __init__(
        self,
        cfg: Config,
        directory: Directory,
        tickets: TicketStore,
        clock: Clock,
        connector: AgentConnector | None = None,
        hotlines: Hotlines | None = None,
    ) -> None:
        self.hotlines = hotlines or Hotlines.from_config(cfg)
        self.ivrs = {h.id: HotlineIVR(cfg, directory, tickets, clock, connector, hotline=h) for h in self.hotlines}

    def ivr_for(self, ch: Channel) -> HotlineIVR:
        did = ch.args[0] if ch.args else None
        hotline, listed = self.hotlines.for_did(did)
        if did and not listed and not self.hotlines.implicit:
            structlog.get_logger("callcentre.ivr").warning(
                "number not listed by any hotline; the default hotline answers", uniqueid=ch.uniqueid,
                did=did if len(did) <= 40 else did[:40] + "...", hotline=hotline.id)
        return self.ivrs[hotline.id]

    async def run(self, ch: Channel) -> Outcome:
        return await self.ivr_for(ch).run(ch)

    async def take_message(self, ch: Channel, call: CallInfo, reason: str) -> Outcome:
        """A voice message for a caller no person could take (a transfer not answered), by the IVR of the
        call's own hotline (its prompts, its tickets)."""
        ivr = self.ivrs.get(call.hotline_id or "") or self.ivrs[self.hotlines.default.id]
        return await ivr.take_message(ch, call, reason)

    async def drain(self) -> None:
        for ivr in self.ivrs.values():
            await ivr.drain()


__all__ = [
    "HotlineIVR", "HotlineRouter", "AgentConnector", "DialplanQueueConnector", "CallInfo", "Outcome", "required_prompts",
    "RESULT_VARIABLE",
]
