"""Several hotlines in one server (issue 12, point 3): which hotline a call is on, and what that hotline is.

A management company runs many estates, each with its own published number(s) (DIDs), its own name in
the greeting, its own menu and prompts, its own business hours and night service, and its own agents.
The dialplan passes the number the caller dialled to the FastAGI ``hotline`` script as its argument
(``AGI(agi://.../hotline,<digits of the DID>)``); :meth:`Hotlines.for_did` turns it into a
:class:`Hotline`. A number no hotline lists goes to the default hotline (the one marked ``default``,
else the first).

A configuration without ``hotlines:`` has one implicit hotline, :data:`DEFAULT_HOTLINE_ID`, made of the
top-level keys (``centre.name``, ``ivr:``, ``acd.business_hours`` ...): the server behaves exactly as it
did before hotlines existed, and every ticket and call carries that id.

Pure: the configuration's schema in, plain values out; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from callcentre.config.schema import BusinessHours, Config, IVRConfig, hotline_ivr

DEFAULT_HOTLINE_ID = "default"
"""The id of the one implicit hotline of a configuration without ``hotlines:`` (and of rows older than hotlines)."""

_DID_ARG = re.compile(r"^\+?[0-9]{1,32}\Z")
_LANGS = ("zh", "en")


def dialled_number(value: str | None) -> str | None:
    """The DID argument as the dialplan passes it (``FILTER(0-9)`` of ``${EXTEN}``), checked again here:
    anything but an optional ``+`` and 1-32 digits is no number (the caller then gets the default hotline)."""
    if value is None or not _DID_ARG.match(value):
        return None
    return value.lstrip("+")


@dataclass(frozen=True, slots=True)
class PromptSet:
    """Where a hotline's prompts are: its own recordings (``own``, under ``dir``) and the shared ones.

    Prompt names handed to the Channel port are ``<lang>/<name>`` (the shared set) or
    ``<dir>/<lang>/<name>`` for a prompt this hotline recorded itself; the AGI adapter prefixes
    ``prompts.asterisk_path`` either way."""

    dir: str | None = None
    own: frozenset[str] = frozenset()

    def path(self, name: str, language: str) -> str:
        if self.dir and name in self.own:
            return f"{self.dir}/{language}/{name}"
        return f"{language}/{name}"

    def resolve(self, prompt: str, language: str) -> str:
        """``name`` in ``language``, or ``lang/name`` as given, through this set."""
        lang, sep, name = prompt.partition("/")
        if sep and "/" not in name:
            return self.path(name, lang)
        if sep:
            return prompt  # already a full path
        return self.path(prompt, language)


SHARED_PROMPTS = PromptSet()


@dataclass(frozen=True, slots=True)
class NightService:
    """Out of hours with nobody staffed for the hotline: the caller is told it is closed and leaves a
    message; an emergency rings ``on_duty_interface`` (when set)."""

    business_hours: BusinessHours
    on_duty_interface: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Hotline:
    id: str
    names: Mapping[str, str]
    dids: frozenset[str]
    ivr: IVRConfig
    prompts: PromptSet = SHARED_PROMPTS
    night: NightService = field(default_factory=lambda: NightService(BusinessHours()))
    agent_groups: frozenset[str] = frozenset()
    agent_logins: frozenset[str] = frozenset()
    is_default: bool = False

    def name(self, language: str = "zh") -> str:
        return self.names.get(language) or next(iter(self.names.values()), self.id)

    def answered_by(self, login: str, skills: frozenset[str] | Sequence[str]) -> bool:
        """Whether an agent (by login and skills, the group tags) answers this hotline's calls."""
        if not self.agent_groups and not self.agent_logins:
            return True
        return login in self.agent_logins or bool(self.agent_groups.intersection(skills))

    def card(self) -> dict[str, Any]:
        """The hotline as the screen-pop, the wallboard and the API show it."""
        return {"id": self.id, "name": {lang: self.name(lang) for lang in _LANGS}}


class Hotlines:
    """The hotlines of one configuration, and the rules that pick one."""

    def __init__(self, hotlines: Sequence[Hotline], *, implicit: bool = False) -> None:
        if not hotlines:
            raise ValueError("at least one hotline")
        by_id: dict[str, Hotline] = {}
        by_did: dict[str, Hotline] = {}
        for h in hotlines:
            if h.id in by_id:
                raise ValueError(f"hotline id {h.id!r} used twice")
            by_id[h.id] = h
            for did in h.dids:
                if did in by_did:
                    raise ValueError(f"DID {did} claimed by both {by_did[did].id!r} and {h.id!r}")
                by_did[did] = h
        defaults = [h for h in hotlines if h.is_default]
        if len(defaults) > 1:
            raise ValueError("only one hotline may be the default")
        self._list = tuple(hotlines)
        self._by_id = by_id
        self._by_did = by_did
        self.default = defaults[0] if defaults else hotlines[0]
        self.implicit = implicit

    @classmethod
    def from_config(cls, cfg: Config) -> "Hotlines":
        if not cfg.hotlines:
            return cls([implicit_hotline(cfg)], implicit=True)
        out = []
        for h in cfg.hotlines:
            names = dict(h.name)
            out.append(Hotline(
                id=h.id,
                names=names,
                dids=frozenset(h.dids),
                ivr=hotline_ivr(cfg.ivr, h.ivr),
                prompts=PromptSet(h.prompt_dir, frozenset(h.prompts.own)),
                night=NightService(h.business_hours or cfg.acd.business_hours,
                                   h.on_duty_interface or cfg.acd.on_duty_interface),
                agent_groups=frozenset(h.agent_groups),
                agent_logins=frozenset(h.agents),
                is_default=h.default,
            ))
        return cls(out)

    def __iter__(self) -> Iterator[Hotline]:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def __contains__(self, hotline_id: object) -> bool:
        return hotline_id in self._by_id

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(h.id for h in self._list)

    def get(self, hotline_id: str | None) -> Hotline | None:
        return self._by_id.get(hotline_id) if hotline_id else None

    def for_did(self, did: str | None) -> tuple[Hotline, bool]:
        """The hotline of a dialled number, and whether a hotline lists it (False: the default's)."""
        digits = dialled_number(did)
        found = self._by_did.get(digits) if digits else None
        return (found, True) if found is not None else (self.default, False)

    def for_agent(self, login: str, skills: frozenset[str] | Sequence[str]) -> frozenset[str]:
        """The hotlines an agent answers (by their login and their skills, the group tags)."""
        return frozenset(h.id for h in self._list if h.answered_by(login, skills))

    def night_services(self) -> dict[str, NightService]:
        return {h.id: h.night for h in self._list}

    def cards(self) -> list[dict[str, Any]]:
        return [h.card() for h in self._list]


def implicit_hotline(cfg: Config) -> Hotline:
    """The one hotline of a configuration without ``hotlines:``: the top-level keys, the shared prompts."""
    name = cfg.centre.name
    return Hotline(
        id=DEFAULT_HOTLINE_ID,
        names={lang: name for lang in _LANGS},
        dids=frozenset(),
        ivr=cfg.ivr,
        prompts=SHARED_PROMPTS,
        night=NightService(cfg.acd.business_hours, cfg.acd.on_duty_interface),
        is_default=True,
    )


def default_hotline_id(cfg: Config) -> str:
    """The hotline rows without one (older than hotlines, or made where no call is known) belong to."""
    return Hotlines.from_config(cfg).default.id


__all__ = [
    "DEFAULT_HOTLINE_ID", "Hotline", "Hotlines", "NightService", "PromptSet", "SHARED_PROMPTS", "default_hotline_id",
    "dialled_number", "implicit_hotline",
]
