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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

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
    transfers: TransfersConfig = TransfersConfig()
    # Several servers on one PostgreSQL: the leader election and the shared live hub (callcentre/cluster).
    cluster: ClusterConfig = ClusterConfig()
    # The environment the configuration was loaded from (secrets are read from it).
    _environ: dict[str, str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _queue_log_apart_from_the_fallback_queue(self) -> "Config":
        if self.queue_log.queue_name == self.acd.fallback_queue:
            raise ValueError(
                f"queue_log.queue_name {self.queue_log.queue_name!r} is the dialplan's fallback queue "
                "(acd.fallback_queue): give our calls a name of their own so reports can tell the two apart"
            )
        return self

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
