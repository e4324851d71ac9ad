r"""The shapes of the small identifiers that cross into Asterisk, defined once.

Each is checked where a value enters (configuration, the users table, an IVR choice) so that a bad
value fails there, with a clear message, rather than when it is dialled or written to AMI. They end in
``\Z``, not ``$``: ``$`` also matches before a trailing line break, so ``"repair\n"`` passed as a skill.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"^[a-z0-9_\-]{1,32}\Z")
"""A skill or a language: lower-case letters, digits, ``_`` and ``-`` (it becomes part of an index key)."""

INTERFACE = re.compile(r"^(Local|SIP|PJSIP|IAX2|DAHDI)/[A-Za-z0-9_\-+.@#*]{1,100}\Z")
"""A dial string for one phone, technology/resource: no separators Dial would interpret (``& , | ( )``),
no spaces, quotes or line breaks."""

DIALLABLE = re.compile(r"^\+?[0-9]{3,20}\Z")
"""A number we may dial (a call-back): a leading ``+`` and digits, nothing an AMI value or a dial string
could misread."""

PLAIN_CALLER_NUMBER = re.compile(r"\+?[0-9*#]{0,32}")
"""A caller number passed on to the agent's phone as it came (use ``fullmatch``); anything else is
replaced by the normalised number."""

CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_\-+.@#*/;]{1,128}\Z")
"""A channel name as Asterisk reports it (``Local/agent1@callcentre-agents-0000002a;1``,
``PJSIP/agent1-0000002a``): nothing ChanSpy's argument list would split on."""


def is_token(value: str | None) -> bool:
    return bool(value) and TOKEN.match(value or "") is not None


def is_diallable(number: str | None) -> bool:
    return bool(number) and DIALLABLE.match(number or "") is not None


__all__ = ["CHANNEL_NAME", "DIALLABLE", "INTERFACE", "PLAIN_CALLER_NUMBER", "TOKEN", "is_diallable", "is_token"]
