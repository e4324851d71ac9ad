"""The configuration's schema: every section as a validated, frozen pydantic model, and nothing else.

The domain imports these models (and only these); reading the YAML file, applying environment
overrides and reading secrets is :mod:`callcentre.config.loader`'s. Each validator's message names
the key and the reason, so a bad value is reported at start-up in words a person can act on.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from callcentre.cluster.config import ClusterConfig
from callcentre.domain.menu import MenuAction
from callcentre.domain.patterns import INTERFACE, TOKEN
from callcentre.domain.ticket_number import PREFIX_PATTERN


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CentreConfig(_Section):
    name: str = "Property Service Centre"
    timezone: str = "Asia/Shanghai"
    # Caller-ID normalisation: the country the hotline is in and its trunk prefix.
    country_code: str = "86"
    trunk_prefix: str = "0"
    international_prefix: str = "00"
    # Local landline numbers that arrive without an area code get this one (e.g. "10" for Beijing).
    area_code: str | None = None
    # How the server dials an owner (call-backs): {number} is the E.164 number (+8613800138000),
    # checked to be '+' and digits only; the dialplan context rewrites it for the carrier.
    outbound_template: str = "Local/{number}@callcentre-outbound"

    @field_validator("outbound_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{number}" not in v or not re.fullmatch(r"(Local|SIP|PJSIP|IAX2|DAHDI)/[A-Za-z0-9_\-+.@#*{}/]{1,100}", v):
            raise ValueError("must be a dial string containing {number}, e.g. Local/{number}@callcentre-outbound")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz_exists(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///var/callcentre.db"
    echo: bool = False
    # Seconds a write may wait for a lock before giving up (SQLite busy timeout, PostgreSQL lock_timeout).
    busy_timeout_seconds: float = Field(5.0, gt=0, le=120)
    # PostgreSQL: seconds to wait for a connection to the server.
    connect_timeout_seconds: float = Field(5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _async_driver(cls, v: str) -> str:
        if not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://", v):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


class AGIConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(4573, ge=0, le=65535)
    # FastAGI has no authentication: only these peers (addresses or networks) may connect.
    allowed_peers: list[str] = ["127.0.0.1/32", "::1/128"]
    max_sessions: int = Field(2000, ge=1)
    header_max_bytes: int = Field(16384, ge=512)
    header_timeout_seconds: float = Field(5.0, gt=0)
    # How long we wait for Asterisk's reply to one command; commands that play audio or wait
    # for the caller get their own expected duration added to this.
    command_timeout_seconds: float = Field(10.0, gt=0)
    line_max_bytes: int = Field(8192, ge=256)
    # On SIGTERM, calls in progress get this long to finish before they are handed to the dialplan's
    # fallback queue: at least the longest recording (ivr.record_max_seconds) plus its read-back.
    shutdown_grace_seconds: float = Field(75.0, ge=5, le=3600)

    @field_validator("allowed_peers")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return v


class AMIConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "callcentre"
    secret: str | None = Field(None, repr=False)
    secret_file: Path | None = None
    ping_interval_seconds: float = Field(5.0, gt=0)
    # A link that misses this many Ping replies in a row is treated as dead.
    missed_pings: int = Field(2, ge=1)
    # Reconnecting after a drop or an Asterisk restart: capped exponential backoff with jitter. The cap
    # is kept short so the link is back within seconds of Asterisk accepting connections again.
    reconnect_min_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(4.0, gt=0)
    # After this many failed logins in a row (a wrong secret), retries slow to login_retry_seconds and
    # one error is logged: no flood of attempts or log lines.
    login_failures_before_backoff: int = Field(3, ge=1)
    login_retry_seconds: float = Field(60.0, gt=0)
    action_timeout_seconds: float = Field(10.0, gt=0)
    # Connecting and reading the banner: kept short so a PBX that accepts but stays silent does not
    # hold up a reconnection.
    connect_timeout_seconds: float = Field(3.0, gt=0, le=60)
    value_max_length: int = Field(1024, ge=16)


class WebConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    session_key: str | None = Field(None, repr=False)
    session_key_file: Path | None = None
    allowed_origins: list[str] = []
    cookie_secure: bool = False
    login_attempts_per_minute: int = Field(10, ge=1)
    websocket_queue_max: int = Field(256, ge=8)


class PromptsConfig(_Section):
    # How Asterisk finds our prompts: STREAM FILE <asterisk_path>/<lang>/<name>. A relative path is
    # relative to Asterisk's sounds directory (astdatadir/sounds).
    asterisk_path: str = "callcentre"
    # Where the repository's WAV files are (checked at start-up and by the tests).
    local_dir: Path = Path("prompts")


class Category(_Section):
    code: str
    prompt: str
    priority: Literal["general", "major"] = "general"
    skill: str | None = None

    @field_validator("code", "prompt")
    @classmethod
    def _token(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_\-]+", v):
            raise ValueError("only lower-case letters, digits, '_' and '-'")
        return v


_DIGIT = re.compile(r"^[0-9*#]$")


def _check_digit_keys(v: dict[str, Any]) -> dict[str, Any]:
    for k in v:
        if not _DIGIT.match(k):
            raise ValueError(f"menu key {k!r} must be one DTMF digit (0-9, * or #)")
    return v


# The menu's actions are the domain's (callcentre.domain.menu.MenuAction): one list, validated here by value.


class IVRConfig(_Section):
    default_language: Literal["zh", "en"] = "zh"
    # Main menu: digit -> action.
    menu: dict[str, MenuAction] = {
        "1": MenuAction.SELF_SERVICE,
        "2": MenuAction.REPAIR,
        "3": MenuAction.COMPLAINT,
        "0": MenuAction.AGENT,
        "8": MenuAction.EMERGENCY,
        "9": MenuAction.ENGLISH,
        "*": MenuAction.REPEAT,
    }
    digit_timeout_ms: int = Field(5000, ge=500, le=60000)
    # Wrong digit or silence: re-prompt this many times in all, then go to an agent.
    max_attempts: int = Field(3, ge=1, le=10)
    record_max_seconds: int = Field(60, ge=5, le=600)
    record_silence_seconds: int = Field(4, ge=0, le=60)
    record_format: Literal["wav", "gsm", "wav49", "sln"] = "wav"
    # Where Asterisk writes recordings (on the Asterisk host).
    record_dir: str = "/var/spool/asterisk/callcentre"
    # Caller ID can be spoofed: before reading a balance, ask for the unit number ("unit") or a
    # PIN ("pin"), or nothing ("none").
    self_service_guard: Literal["none", "unit", "pin"] = "unit"
    unit_entry_max_digits: int = Field(6, ge=1, le=12)
    building_entry_max_digits: int = Field(3, ge=1, le=6)
    repair_categories: dict[str, Category] = {
        "1": Category(code="water", prompt="cat-water", skill="repair"),
        "2": Category(code="electrical", prompt="cat-electrical", skill="repair"),
        "3": Category(code="lift", prompt="cat-lift", skill="repair"),
        "4": Category(code="doors", prompt="cat-doors", skill="repair"),
        "5": Category(code="public_areas", prompt="cat-public-areas", skill="repair"),
        "6": Category(code="other", prompt="cat-other", skill="repair"),
    }
    complaint_categories: dict[str, Category] = {
        "1": Category(code="property", prompt="ccat-property", skill="complaint"),
        "2": Category(code="government", prompt="ccat-government", skill="complaint"),
        "3": Category(code="building", prompt="ccat-building", skill="complaint"),
        "4": Category(code="equipment", prompt="ccat-equipment", skill="complaint"),
        "5": Category(code="security", prompt="ccat-security", skill="complaint"),
        "6": Category(code="environment", prompt="ccat-environment", skill="complaint"),
        "7": Category(code="services", prompt="ccat-services", skill="complaint"),
        "8": Category(code="disputes", prompt="ccat-disputes", skill="complaint"),
    }
    emergency_categories: dict[str, Category] = {
        "1": Category(code="water_leak", prompt="emg-water-leak", priority="major", skill="repair"),
        "2": Category(code="lift_entrapment", prompt="emg-lift", priority="major", skill="repair"),
        "3": Category(code="gas", prompt="emg-gas", priority="major", skill="repair"),
    }

    _menu_keys = field_validator("menu", "repair_categories", "complaint_categories", "emergency_categories")(
        classmethod(lambda cls, v: _check_digit_keys(v))
    )

    @model_validator(mode="after")
    def _menu_complete(self) -> "IVRConfig":
        actions = set(self.menu.values())
        if "agent" not in actions:
            raise ValueError("menu: one digit must lead to 'agent' (a caller must always reach a person)")
        for name in ("repair_categories", "complaint_categories", "emergency_categories"):
            if not getattr(self, name):
                raise ValueError(f"{name}: needs at least one category")
        return self


class PromisesConfig(_Section):
    """How long we promise to close a ticket, in minutes, by priority; per-category overrides."""

    general_minutes: int = Field(30, ge=1)
    major_minutes: int = Field(360, ge=1)
    # category code -> {general: minutes, major: minutes}
    per_category: dict[str, dict[Literal["general", "major"], int]] = {}
    warn_fraction: float = Field(0.8, gt=0, lt=1)


class TicketsConfig(_Section):
    number_prefix: dict[str, str] = {
        "repair": "R",
        "complaint": "C",
        "emergency": "E",
        "message": "M",
        "enquiry": "Q",
    }
    promises: PromisesConfig = PromisesConfig()

    @field_validator("number_prefix")
    @classmethod
    def _prefixes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: p for k, p in v.items() if not re.fullmatch(PREFIX_PATTERN, p)}
        if bad:
            raise ValueError(f"ticket number prefixes are 1 to 4 capital letters (A-Z): {bad}")
        return v


class BusinessHours(_Section):
    # Days 0=Monday … 6=Sunday; times local to centre.timezone.
    days: list[int] = [0, 1, 2, 3, 4, 5, 6]
    open: str = "00:00"
    close: str = "24:00"

    @field_validator("open", "close")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", v):
            raise ValueError("must be HH:MM (00:00 to 24:00)")
        return v


class AgentConfig(_Section):
    """An agent defined in the configuration (agents can also be created in the database)."""

    id: str
    name: str
    # The agent's phone as an Asterisk dial string: Local/agent1@callcentre-agents, SIP/agent1, PJSIP/agent1
    interface: str
    skills: list[str] = ["repair", "complaint", "fees"]
    languages: list[str] = ["zh"]
    vip_capable: bool = False
    senior: bool = False
    # State at server start when no earlier state is recorded.
    start: Literal["ready", "logged_out"] = "logged_out"

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,32}", v):
            raise ValueError("1-32 letters, digits, '_' or '-'")
        return v

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str) -> str:
        if not re.fullmatch(r"(Local|SIP|PJSIP|IAX2|DAHDI)/[A-Za-z0-9_\-+.@#*]{1,100}", v):
            raise ValueError("must look like Local/agent1@callcentre-agents, SIP/agent1 or PJSIP/agent1")
        return v


class ACDConfig(_Section):
    # Off: a caller who asks for a person is handed back to the dialplan's fallback queue.
    enabled: bool = True
    agents: list[AgentConfig] = []
    # After the agent hangs up, ask the caller to rate the service from 1 to 5.
    satisfaction_survey: bool = True
    rings_target: int = Field(2, ge=1, le=10)
    ring_cycle_seconds: float = Field(5.0, gt=0, le=30)
    wrapup_seconds: float = Field(15.0, ge=0, le=3600)
    missed_offers_before_pause: int = Field(2, ge=1)
    announce_every_seconds: float = Field(30.0, ge=5)
    max_wait_seconds: float = Field(600.0, ge=10)
    callback_digit: str = "1"
    prefer_previous_agent: bool = True
    repeat_caller_hours: float = Field(24.0, ge=0)
    music_class: str = "default"
    business_hours: BusinessHours = BusinessHours()
    # Emergencies outside business hours ring this (an Asterisk dial string, e.g. PJSIP/duty-phone).
    on_duty_interface: str | None = None
    # The Asterisk Queue the dialplan falls back to; also used while call distribution is off.
    fallback_queue: str = "hotline-fallback"

    @field_validator("callback_digit")
    @classmethod
    def _one_digit(cls, v: str) -> str:
        if not _DIGIT.match(v):
            raise ValueError("must be one DTMF digit")
        return v

    @model_validator(mode="after")
    def _unique_agents(self) -> "ACDConfig":
        ids = [a.id for a in self.agents]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"agents: id(s) used twice: {', '.join(dup)}")
        return self

    @property
    def ring_timeout_seconds(self) -> float:
        return self.rings_target * self.ring_cycle_seconds


# --- several hotlines (issue 12): one server, one config, many estates -----------------------------

_HOTLINE_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}\Z")
_DID = re.compile(r"^\+?[0-9][0-9 \-]{0,39}\Z")
_PROMPT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}\Z")
_PROMPT_DIR = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,3}\Z")
_LOGIN = re.compile(r"^[A-Za-z0-9_\-]{1,32}\Z")
_DIAL_STRING = re.compile(r"^(Local|SIP|PJSIP|IAX2|DAHDI)/[A-Za-z0-9_\-+.@#*]{1,100}\Z")
HotlineLanguage = Literal["zh", "en"]


def did_digits(value: str) -> str:
    """A DID as the dialplan hands it over: its digits only (``+86 400-800-1001`` -> ``864008001001``)."""
    return "".join(ch for ch in value if ch.isdigit())


class HotlinePrompts(_Section):
    """A hotline's own recordings: only the prompts that differ; every other prompt is the shared one."""

    # Under prompts.local_dir and prompts.asterisk_path; default hotlines/<id> (files <dir>/<lang>/<name>.wav).
    dir: str | None = None
    # The prompt names this hotline has its own recording of (the greeting, with its name, at least).
    own: list[str] = ["greeting"]
    # Texts tools/make_prompts.py renders for own prompts other than the greeting (whose text is `greeting`).
    texts: dict[str, dict[HotlineLanguage, str]] = {}

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str | None) -> str | None:
        if v is not None and not _PROMPT_DIR.match(v):
            raise ValueError("a relative folder of letters, digits, '_' and '-' (e.g. hotlines/riverside)")
        return v

    @field_validator("own")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not _PROMPT_NAME.match(n)]
        if bad:
            raise ValueError(f"prompt names are lower-case letters, digits, '_' and '-': {bad}")
        return v

    @model_validator(mode="after")
    def _texts_for_own(self) -> "HotlinePrompts":
        stray = sorted(set(self.texts) - set(self.own))
        if stray:
            raise ValueError(f"texts: {stray} are not in own (a text is only rendered for an own prompt)")
        return self


class HotlineConfig(_Section):
    """One estate's hotline: its numbers, its name in the greeting, its menu and prompts, its hours and
    night service, and the agents who answer it. Everything left out is the top-level setting."""

    id: str
    # Display names (the wallboard, the screen-pop, the reports; the greeting's text is made from them).
    name: dict[HotlineLanguage, str]
    # The numbers callers dial (as the trunk delivers them; compared by their digits).
    dids: list[str] = []
    # The hotline of calls on a number no hotline lists (at most one; without one, the first hotline).
    default: bool = False
    # The greeting's text per language for tools/make_prompts.py (default: made from the name).
    greeting: dict[HotlineLanguage, str] = {}
    prompts: HotlinePrompts = HotlinePrompts()
    # What differs from the top-level ivr: (menu, categories, language ...); a null removes a menu digit.
    ivr: dict[str, Any] = {}
    # Default: acd.business_hours / acd.on_duty_interface.
    business_hours: BusinessHours | None = None
    on_duty_interface: str | None = None
    # Who answers: agents with one of these skills (group tags) or these logins; neither: every agent.
    agent_groups: list[str] = []
    agents: list[str] = []
    # The queue_log's queuename column for this hotline's calls when there are several (default: its id).
    queue_log_name: str | None = None

    @field_validator("queue_log_name")
    @classmethod
    def _queue_log_name(cls, v: str | None) -> str | None:
        if v is not None and not _QUEUE_NAME.match(v):
            raise ValueError("must be 1-80 characters: letters, digits and _ . @ + - (no '|', spaces or line breaks)")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _HOTLINE_ID.match(v):
            raise ValueError("1-32 lower-case letters, digits, '_' or '-', starting with a letter or digit")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: dict[str, str]) -> dict[str, str]:
        v = {lang: text.strip() for lang, text in v.items() if text and text.strip()}
        if not v:
            raise ValueError("needs a display name in zh or en (both are best)")
        if any(len(text) > 64 or any(ch in text for ch in "\r\n\"<>") for text in v.values()):
            raise ValueError("at most 64 characters, no line breaks, quotes or angle brackets")
        return v

    @field_validator("dids")
    @classmethod
    def _dids(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for did in v:
            if not isinstance(did, str) or not _DID.match(did) or not 1 <= len(did_digits(did)) <= 32:
                raise ValueError(f"{did!r} is not a number (digits, an optional leading '+', spaces or '-')")
            digits = did_digits(did)
            if digits in out:
                raise ValueError(f"{did!r} is listed twice")
            out.append(digits)
        return out

    @field_validator("agent_groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        bad = [g for g in v if not re.fullmatch(r"[a-z0-9_\-]{1,32}", g)]
        if bad:
            raise ValueError(f"group tags are agent skills (lower-case letters, digits, '_' and '-'): {bad}")
        return v

    @field_validator("agents")
    @classmethod
    def _logins(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _LOGIN.match(a)]
        if bad:
            raise ValueError(f"agent logins are 1-32 letters, digits, '_' or '-': {bad}")
        return v

    @field_validator("on_duty_interface")
    @classmethod
    def _on_duty(cls, v: str | None) -> str | None:
        if v is not None and not _DIAL_STRING.match(v):
            raise ValueError("must look like PJSIP/duty-phone, SIP/duty or Local/8000@duty")
        return v

    @property
    def prompt_dir(self) -> str:
        return self.prompts.dir or f"hotlines/{self.id}"


def _merge_over(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, dicts merged key by key; a None removes the key (a menu digit)."""
    out = dict(base)
    for k, v in over.items():
        k = str(k)  # YAML reads an unquoted menu digit 1 as a number
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_over(out[k], v)
        else:
            out[k] = v
    return out


def hotline_ivr(base: IVRConfig, overrides: dict[str, Any]) -> IVRConfig:
    """A hotline's IVR: the top-level ``ivr:`` with what the hotline overrides (raises ValueError)."""
    if not overrides:
        return base
    try:
        return IVRConfig.model_validate(_merge_over(base.model_dump(), overrides))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'ivr'}: "
            f"{'unknown key (check the spelling)' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None


def check_hotlines(hotlines: list[HotlineConfig], ivr: IVRConfig | None) -> None:
    """What no one hotline can check alone: ids and DIDs unique, one default at most, each merged IVR valid."""
    seen: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for i, h in enumerate(hotlines):
        if h.id in seen:
            raise ValueError(f"hotlines[{i}].id: {h.id!r} is used twice")
        seen[h.id] = h.id
        for did in h.dids:
            if did in claimed:
                raise ValueError(f"hotlines[{i}].dids: {did} is claimed by both {claimed[did]!r} and {h.id!r}")
            claimed[did] = h.id
        if ivr is not None:
            try:
                hotline_ivr(ivr, h.ivr)
            except ValueError as exc:
                raise ValueError(f"hotlines[{i}] ({h.id}).ivr: {exc}") from None
    defaults = [h.id for h in hotlines if h.default]
    if len(defaults) > 1:
        raise ValueError(f"hotlines: only one may be the default for unknown numbers (now: {', '.join(defaults)})")


# --- the service loop: departments, call-backs, repeats, reconciliation --------------------------

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_CODE = re.compile(r"^[a-z0-9_\-]+$")

def parse_hhmm(v: str) -> time:
    """``HH:MM`` (already validated) as a time of day."""
    hours, minutes = v.split(":")
    return time(int(hours), int(minutes))


class Worker(_Section):
    id: str
    name: str
    phone: str | None = None  # for the dispatch webhook (SMS / WeChat Work); never dialled unescaped

    @field_validator("id")
    @classmethod
    def _code(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError("only lower-case letters, digits, '_' and '-'")
        return v


class Department(_Section):
    code: str
    name: str
    # Category codes this department takes by default (the desk pre-selects it).
    categories: list[str] = []
    workers: list[Worker] = []
    # A call transferred to this department rings these phones in order, two rings each (Asterisk dial
    # strings, e.g. PJSIP/eng-office) ...
    transfer_interfaces: list[str] = []
    # ... or, with no phones listed, the agents who have this skill (a skill group).
    transfer_skill: str | None = None

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError("only lower-case letters, digits, '_' and '-'")
        return v

    @field_validator("transfer_interfaces")
    @classmethod
    def _interfaces(cls, v: list[str]) -> list[str]:
        for i in v:
            if not INTERFACE.match(i):
                raise ValueError(f"{i!r} must look like PJSIP/eng-office, SIP/8001 or Local/8001@agents")
        return v

    @field_validator("transfer_skill")
    @classmethod
    def _skill(cls, v: str | None) -> str | None:
        if v is not None and not TOKEN.match(v):
            raise ValueError("a skill is a lower-case token (letters, digits, '_' and '-')")
        return v

    @property
    def takes_transfers(self) -> bool:
        return bool(self.transfer_interfaces or self.transfer_skill)


CallbackResultName = Literal["no_answer", "busy", "failed", "hung_up", "congestion", "no_input"]


class CallbackPolicy(_Section):
    """When the closing call-back (回访) is placed and retried."""

    # Minutes after the ticket is resolved before the first call (let the worker leave the flat).
    first_delay_minutes: int = Field(5, ge=0, le=24 * 60)
    # Minutes after a failed attempt before the next; the last value repeats if attempts remain.
    retry_delays_minutes: list[int] = [30, 120, 24 * 60]
    max_attempts: int = Field(4, ge=1, le=20)
    # Local to centre.timezone: no call is placed before start or from end on.
    calling_hours_start: str = "09:00"
    calling_hours_end: str = "20:00"
    calling_days: list[int] = [0, 1, 2, 3, 4, 5, 6]  # 0 = Monday
    # Which results are worth another try; anything else is flagged for a person at once
    # ("failed" is usually a wrong number, so by default a person looks at it).
    retry_on: list[CallbackResultName] = ["no_answer", "busy", "hung_up", "congestion", "no_input"]
    # Originate Timeout: how long the owner's phone rings.
    ring_seconds: int = Field(30, ge=5, le=120)

    @field_validator("calling_hours_start", "calling_hours_end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("must be HH:MM (00:00 to 23:59)")
        return v

    @field_validator("retry_delays_minutes")
    @classmethod
    def _delays(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 for d in v):
            raise ValueError("needs at least one delay, each at least 1 minute")
        return v

    @field_validator("calling_days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if not v or any(d not in range(7) for d in v):
            raise ValueError("days are 0 (Monday) to 6 (Sunday); at least one")
        return v

    @model_validator(mode="after")
    def _window(self) -> "CallbackPolicy":
        if parse_hhmm(self.calling_hours_start) >= parse_hhmm(self.calling_hours_end):
            raise ValueError("calling_hours_start must be before calling_hours_end")
        return self


def _default_departments() -> list[Department]:
    return [
        Department(
            code="engineering",
            name="Engineering",
            categories=["water", "electrical", "lift", "doors", "equipment", "water_leak", "lift_entrapment", "gas"],
            workers=[Worker(id="eng-duty", name="Engineering duty")],
        ),
        Department(
            code="cleaning",
            name="Cleaning",
            categories=["public_areas", "environment"],
            workers=[Worker(id="clean-duty", name="Cleaning duty")],
        ),
        Department(
            code="security",
            name="Security",
            categories=["security"],
            workers=[Worker(id="sec-duty", name="Security duty")],
        ),
        Department(code="greening", name="Greening", workers=[Worker(id="green-duty", name="Greening duty")]),
        Department(
            code="customer_service",
            name="Customer service",
            categories=["property", "government", "building", "services", "disputes", "other"],
            workers=[Worker(id="cs-duty", name="Customer service duty")],
        ),
    ]


class ServiceConfig(_Section):
    """Proposed ``service`` section: departments and workers, call-backs, repeats, reconciliation."""

    departments: list[Department] = Field(default_factory=_default_departments)
    callback: CallbackPolicy = CallbackPolicy()
    # Same owner or unit, same category, within this many days: a repeat complaint.
    repeat_days: int = Field(30, ge=1, le=365)
    # Local time of the daily reconciliation (当日盘点).
    reconciliation_time: str = "22:00"
    # How often the promise evaluator runs, and how fast it catches up after a wall-clock step.
    escalation_check_seconds: float = Field(15.0, ge=1, le=300)
    clock_catch_up: float = Field(1.0, ge=0, le=60)

    @field_validator("reconciliation_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("must be HH:MM (00:00 to 23:59)")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "ServiceConfig":
        codes = [d.code for d in self.departments]
        dup = {c for c in codes if codes.count(c) > 1}
        if dup:
            raise ValueError(f"departments: code(s) used twice: {', '.join(sorted(dup))}")
        workers = [w.id for d in self.departments for w in d.workers]
        dup = {w for w in workers if workers.count(w) > 1}
        if dup:
            raise ValueError(f"departments: worker id(s) used twice: {', '.join(sorted(dup))}")
        return self


class WebhooksConfig(_Section):
    """Dispatch out: a signed JSON POST to each URL when a ticket is dispatched to a worker."""

    urls: list[str] = []
    # The signing secret: CALLCENTRE_WEBHOOK_SECRET, or this file (outside git).
    secret_file: Path | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    retry_base_seconds: float = Field(10.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=100)
    poll_seconds: float = Field(5.0, gt=0)

    @field_validator("urls")
    @classmethod
    def _http(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"^https?://[^\s]+$", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return v


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,79}$")


class QueueLogConfig(_Section):
    """Asterisk-compatible queue_log written by our own call distribution (docs/queue-log.md)."""

    enabled: bool = False
    # Relative to the server's working directory (like the SQLite database under var/). On the Asterisk
    # host it may be Asterisk's own astlogdir/queue_log (both append whole lines).
    path: Path = Path("var/queue_log")
    # The queuename column of our calls; never the dialplan's fallback queue, so the two stay apart.
    queue_name: str = "hotline"
    # Which of the agent's fields is the agent column (login: stable and unique).
    agent_field: Literal["login", "name", "interface"] = "login"
    # ENTERQUEUE's fourth field, the caller's name (app_queue's log-caller-id-name).
    log_caller_name: bool = False
    # Lines waiting for a stalled disk before new ones are dropped (and counted).
    max_pending: int = Field(10000, ge=1, le=1_000_000)

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, v: str) -> str:
        if not _QUEUE_NAME.match(v):
            raise ValueError("must be 1-80 characters: letters, digits and _ . @ + - (no '|', spaces or line breaks)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        if str(v) in ("", ".") or any(c in str(v) for c in "\r\n\x00"):
            raise ValueError("must be a file path")
        return v


_RECORDING_DIR = re.compile(r"^/[A-Za-z0-9_.\-/]{0,200}\Z")


class RecordingAnnouncement(_Section):
    """"This call may be recorded" (prompt ``call-recorded``, zh and en, in the caller's language)."""

    # To the caller once, when they join the queue for an agent (before anyone is rung).
    to_caller: bool = True
    # Also to both parties when the agent answers (Dial's A(): first to the agent, then to the caller);
    # not in the recording (MixMonitor's b option records only the bridged talk).
    at_answer: bool = False


class RecordingConfig(_Section):
    """Agent call recording (MixMonitor started from the FastAGI session before each offer's Dial).

    The files are written by Asterisk and read, served and deleted by the server: on the same host, or a
    directory both see (a shared mount), as ``asterisk_directory`` and ``directory``. docs/asterisk.md
    ("Call recording") has the permissions."""

    enabled: bool = False
    # Where MixMonitor writes, as Asterisk sees it (absolute; no spaces, commas or brackets).
    asterisk_directory: str = "/var/spool/asterisk/callcentre-recordings"
    # The same directory as this server sees it (the same path on one host; the mount point otherwise).
    directory: Path = Path("/var/spool/asterisk/callcentre-recordings")
    # Besides the mixed file, the two directions apart: <name>-caller.wav (what the caller said, MixMonitor
    # r()) and <name>-agent.wav (what the caller heard, t()).
    separate_legs: bool = False
    # Kept this many days after the call, then deleted (rows stay, marked deleted).
    retention_days: int = Field(90, ge=1, le=3650)
    # How often the retention task runs (and the directory's size is measured again).
    retention_check_seconds: float = Field(3600.0, ge=1, le=86400)
    # Below this much free space (or with the directory not writable) a call is not recorded: it still
    # goes through, and the skip is logged, counted and shown on the wallboard. 0: only "writable" is checked.
    min_free_mb: float = Field(500.0, ge=0)
    # After the Dial returns, how long the file may take to be finished (StopMixMonitor closes it at once;
    # after a hang-up it is closed when the channel goes, at the end of the FastAGI session).
    finish_wait_seconds: float = Field(60.0, ge=1, le=3600)
    # A file shorter than the talk by more than this (after the A() announcement) is "short".
    short_tolerance_seconds: float = Field(3.0, ge=0, le=600)
    announcement: RecordingAnnouncement = RecordingAnnouncement()

    @field_validator("asterisk_directory")
    @classmethod
    def _asterisk_dir(cls, v: str) -> str:
        if not _RECORDING_DIR.match(v) or "/../" in f"{v}/" or "/./" in f"{v}/":
            raise ValueError("must be an absolute path of letters, digits, '_', '.', '-' and '/' (it is given to MixMonitor)")
        return v.rstrip("/") or "/"

    @field_validator("directory")
    @classmethod
    def _server_dir(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v


class TransfersConfig(_Section):
    """Agents handing a call to another agent, a skill group or a department (docs/transfers.md)."""

    enabled: bool = True
    # How long a transferred caller waits for the target (its agent, group or department) before the
    # fallback below; each offer within it rings two rings like any other.
    target_wait_seconds: float = Field(60.0, ge=10, le=900)
    # Blind transfer nobody of the target took: "queue" (any agent, the caller keeps their place),
    # "back" (the agent who transferred it), or "message" (a voice message, a call-back ticket).
    no_answer: Literal["queue", "back", "message"] = "queue"
    # A Redirect whose caller has not reached our transfer script within this time is given up.
    arrive_seconds: float = Field(15.0, ge=2, le=120)
    # The dialplan contexts of dialplans/extensions_callcentre.conf the server redirects to.
    context: str = "callcentre-transfer"
    consult_context: str = "callcentre-consult"

    @field_validator("context", "consult_context")
    @classmethod
    def _context(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,40}", v):
            raise ValueError("a dialplan context name: letters, digits, '_' and '-'")
        return v


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Config(_Section):
    centre: CentreConfig = CentreConfig()
    database: DatabaseConfig = DatabaseConfig()
    agi: AGIConfig = AGIConfig()
    ami: AMIConfig = AMIConfig()
    web: WebConfig = WebConfig()
    prompts: PromptsConfig = PromptsConfig()
    ivr: IVRConfig = IVRConfig()
    tickets: TicketsConfig = TicketsConfig()
    acd: ACDConfig = ACDConfig()
    service: ServiceConfig = ServiceConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    recording: RecordingConfig = RecordingConfig()
    logging: LoggingConfig = LoggingConfig()
    queue_log: QueueLogConfig = QueueLogConfig()
    # Several hotlines (estates) in one server; none: one hotline made of the top-level keys.
    hotlines: list[HotlineConfig] = []
    transfers: TransfersConfig = TransfersConfig()
    # Several servers on one PostgreSQL: the leader election and the shared live hub (callcentre/cluster).
    cluster: ClusterConfig = ClusterConfig()
    # The environment the configuration was loaded from (secrets are read from it).
    _environ: dict[str, str] | None = PrivateAttr(default=None)

    @field_validator("hotlines")
    @classmethod
    def _hotlines(cls, v: list[HotlineConfig], info: ValidationInfo) -> list[HotlineConfig]:
        check_hotlines(v, info.data.get("ivr"))
        return v

    @model_validator(mode="after")
    def _queue_log_apart_from_the_fallback_queue(self) -> "Config":
        if self.queue_log.queue_name == self.acd.fallback_queue:
            raise ValueError(
                f"queue_log.queue_name {self.queue_log.queue_name!r} is the dialplan's fallback queue "
                "(acd.fallback_queue): give our calls a name of their own so reports can tell the two apart"
            )
        for hotline, name in self.queue_log_names().items():
            if name == self.acd.fallback_queue:
                raise ValueError(
                    f"hotline {hotline!r}: its queue_log name {name!r} is the dialplan's fallback queue "
                    "(acd.fallback_queue): set hotlines[].queue_log_name to a name of its own"
                )
        return self

    def queue_log_names(self) -> dict[str, str]:
        """The queue_log's queue name of each hotline's calls: with several hotlines its ``queue_log_name``,
        else its id; with one (or none configured) none here: every line is ``queue_log.queue_name``'s."""
        if len(self.hotlines) < 2:
            return {}
        return {h.id: h.queue_log_name or h.id for h in self.hotlines}

    @model_validator(mode="after")
    def _grace_covers_a_recording(self) -> "Config":
        need = self.ivr.record_max_seconds + 15
        if self.agi.shutdown_grace_seconds < need:
            raise ValueError(
                f"agi.shutdown_grace_seconds ({self.agi.shutdown_grace_seconds:g}) must let a caller who is recording "
                f"finish (ivr.record_max_seconds {self.ivr.record_max_seconds}) and hear their ticket number: "
                f"at least {need}"
            )
        return self

    # Secrets are read by the loader (environment, then file, then the inline value); these two stay
    # on the model because every part that holds a Config asks it for them.
    def ami_secret(self) -> str | None:
        """The AMI secret from CALLCENTRE_AMI_SECRET, else ami.secret_file, else ami.secret."""
        from callcentre.config.loader import ami_secret

        return ami_secret(self)

    def web_session_key(self) -> str | None:
        """The session-signing key from CALLCENTRE_WEB_SESSION_KEY, else web.session_key_file, else inline."""
        from callcentre.config.loader import web_session_key

        return web_session_key(self)
