"""The FastAGI wire format, as pure functions: the environment header, replies, and command quoting.

Ground truth is the Asterisk 20 captures in ``tests/fixtures/agi-*.txt`` and ``res/res_agi.c``:

* Asterisk splits a command line with ``parse_args``: spaces and tabs separate arguments, ``"``
  toggles quoting, ``\\`` makes the next character literal. Nothing else is special and no
  ``${...}`` substitution happens there (only ``GET FULL VARIABLE`` substitutes, on purpose).
* It reads a command with ``fgets`` into a 2048-byte buffer: a longer line is cut and its tail runs
  as a *second command*, so :func:`build_command` refuses lines that long.
* Replies are one line (``200 result=...``, ``510 ...``, ``511 ...``) except the usage reply,
  ``520-...`` followed by free text and ``520 End of proper usage.``
* The ``agi_*`` environment goes out raw, in a fixed order: a caller name or number holding CR/LF
  (or a blank line) arrives split over lines. :class:`EnvAssembler` keeps it one field and ends the
  header at Asterisk's own blank line; typed fields show control characters :func:`visible`.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Iterable, Mapping

# fgets(buf, 2048) keeps 2047 bytes including the newline; anything longer is split in two commands.
MAX_COMMAND_BYTES = 2047
# res_agi's MAX_ARGS is 128 (verb words included); beyond it arguments are silently dropped.
MAX_ARGS = 120
# A reply whose (data) holds a newline (a variable with a line break) spans lines; bound that.
MAX_CONTINUATION_LINES = 64

_FORBIDDEN = ("\r", "\n", "\x00")
_VERB = re.compile(r"^[A-Z]+(?: [A-Z]+)*$")
_REPLY = re.compile(r"^(?P<code>\d{3})(?P<sep>[ -])(?P<rest>.*)$", re.S)
_RESULT = re.compile(r"^result=(?P<result>\S*)(?: (?P<tail>.*))?$", re.S)
_DATA = re.compile(r"^\((?P<data>.*)\)(?: endpos=(?P<endpos>-?\d+))?$", re.S)
_ENDPOS = re.compile(r"^endpos=(?P<endpos>-?\d+)$")


class AGIProtocolError(Exception):
    """Asterisk (or whoever is on the socket) sent something that is not FastAGI."""


@dataclass(frozen=True, slots=True)
class AGIEnv:
    """The ``agi_*`` block Asterisk sends when a FastAGI session starts."""

    script: str
    request: str
    channel: str
    uniqueid: str
    callerid: str
    calleridname: str
    language: str
    type: str
    context: str
    extension: str
    priority: str
    version: str
    args: tuple[str, ...]
    raw: Mapping[str, str] = field(default_factory=dict)
    # Lines that were not ``key: value`` and bytes that were not UTF-8: kept for the log line.
    malformed_lines: int = 0
    decode_errors: int = 0
    # Keys whose raw value held control characters (CR/LF...): made visible in the typed fields.
    control_fields: tuple[str, ...] = ()


def _decode(line: bytes | str) -> tuple[str, bool]:
    if isinstance(line, str):
        return line, False
    try:
        return line.decode("utf-8"), False
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), True


# The environment exactly as res_agi sends it (launch_netscript, then setup_env), in this order,
# then agi_arg_1..N and a blank line. Values are sent raw (``%s``): a caller name holding CR/LF
# arrives as ``agi_calleridname: x\r\ny\n``, a "\n\n" in it as a blank line (seen on Asterisk
# 20.20.1, tests/pbx/test_pbx_agi.py).
ASTERISK_ENV_ORDER = (
    "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
    "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname", "agi_callingpres",
    "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context",
    "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid",
)
# Values a caller (or their network) controls, which may hold line breaks: in a header that follows
# ASTERISK_ENV_ORDER, every line until the next field's own line belongs to them.
CALLER_TEXT_FIELDS = frozenset({"agi_callerid", "agi_calleridname", "agi_dnid", "agi_rdnis"})
_FIELD = re.compile(r"^(agi_[A-Za-z0-9_]+):(?: (.*)|)$", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def visible(text: str) -> str:
    """Control characters as visible escapes (``\\r``, ``\\n``, ``\\t``, ``\\x01``): one line, nothing
    a terminal, a log or a later AGI/AMI line could take as a break.

    >>> visible("x\\r\\ny\\x01")
    'x\\\\r\\\\ny\\\\x01'
    """
    return _CONTROL.sub(lambda m: _CONTROL_NAMES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


class EnvAssembler:
    """Reads the ``agi_*`` header line by line and says where it ends; pure (feed lines, get the env).

    While the header follows :data:`ASTERISK_ENV_ORDER` (every real Asterisk's does), a field is only
    ended by the *next* field's line, so a line break in a caller's name or number (even a blank line,
    even a line that looks like ``agi_network_script: x``) stays part of that value and the header
    ends only at the blank line after ``agi_threadid`` / the arguments. A peer whose header departs
    from that order (test tools, other servers) is read leniently: every ``agi_x: y`` line is a field,
    a blank line ends the header, anything else is counted as malformed.
    """

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self.malformed_lines = 0
        self.decode_errors = 0
        self.continued_fields: set[str] = set()
        self._ordered = True  # every field so far came in ASTERISK_ENV_ORDER
        self._pos = -1  # index in ASTERISK_ENV_ORDER of the current field (ordered header)
        self._args = 0  # agi_arg_N fields seen after agi_threadid (ordered header)
        self._current: str | None = None

    def _expected(self) -> tuple[str, ...]:
        if self._pos < 0:
            return ("agi_network", "agi_request")
        if self._pos < len(ASTERISK_ENV_ORDER) - 1:
            return (ASTERISK_ENV_ORDER[self._pos + 1],)
        return (f"agi_arg_{self._args + 1}",)

    def feed(self, line: bytes | str) -> bool:
        """One line as read (with its ``\\n``). True when it is the blank line that ends the header."""
        text, bad = _decode(line)
        self.decode_errors += bad
        # res_agi ends lines with "\n" only: a "\r" before it belongs to the value.
        text = text[:-1] if text.endswith("\n") else text
        m = _FIELD.match(text)
        if self._ordered:
            if m is not None and m.group(1) in self._expected():
                key = m.group(1)
                if key == "agi_request" and self._pos < 0:
                    self._pos = ASTERISK_ENV_ORDER.index(key)
                elif key.startswith("agi_arg_") and self._pos == len(ASTERISK_ENV_ORDER) - 1:
                    self._args += 1
                else:
                    self._pos += 1
                self._set(key, m.group(2) or "")
                return False
            if self._current in CALLER_TEXT_FIELDS:
                self._continue(text)
                return False
            if not text.strip("\r") and self._pos >= ASTERISK_ENV_ORDER.index("agi_threadid"):
                return True
            self._ordered = False  # not Asterisk's header: read the rest leniently
        return self._lenient(text)

    def _lenient(self, text: str) -> bool:
        text = text.rstrip("\r\n")
        if not text:
            return True
        m = _FIELD.match(text)
        if m is None:
            self.malformed_lines += 1
            return False
        self._set(m.group(1), m.group(2) or "")
        return False

    def _set(self, key: str, value: str) -> None:
        # Interned: every session's keys are then the same 22-odd strings, not copies of them.
        self.raw[sys.intern(key.strip())] = value
        self._current = key

    def _continue(self, text: str) -> None:
        assert self._current is not None
        self.raw[self._current] += "\n" + text
        self.continued_fields.add(self._current)

    def env(self) -> AGIEnv:
        raw = self.raw
        numbered: list[tuple[int, str]] = []
        for key, value in raw.items():
            if key.startswith("agi_arg_"):
                suffix = key[len("agi_arg_") :]
                if suffix.isdigit():
                    numbered.append((int(suffix), value))
        args = tuple(visible(value) for _, value in sorted(numbered))

        def get(name: str) -> str:
            return visible(raw.get("agi_" + name, ""))

        return AGIEnv(
            script=get("network_script"),
            request=get("request"),
            channel=get("channel"),
            uniqueid=get("uniqueid"),
            callerid=get("callerid"),
            calleridname=get("calleridname"),
            language=get("language"),
            type=get("type"),
            context=get("context"),
            extension=get("extension"),
            priority=get("priority"),
            version=get("version"),
            args=args,
            raw=raw,  # the assembler is done with it: shared, not copied
            malformed_lines=self.malformed_lines,
            decode_errors=self.decode_errors,
            control_fields=tuple(sorted(k for k, v in raw.items() if _CONTROL.search(v))),
        )


def parse_env(lines: Iterable[bytes | str]) -> AGIEnv:
    """Parse the header lines (the blank line that ends it may be left out); tolerant of anything odd.

    Typed fields (``callerid``, ``calleridname``, ...) have control characters made
    :func:`visible`; ``raw`` keeps the values exactly as sent.

    >>> env = parse_env([b"agi_network_script: hotline\\n", b"agi_arg_2: b\\n", b"agi_arg_1: a\\n"])
    >>> env.script, env.args
    ('hotline', ('a', 'b'))
    """
    assembler = EnvAssembler()
    for item in lines:
        assembler.feed(item)
    return assembler.env()


@dataclass(frozen=True, slots=True)
class AGIReply:
    """One reply. ``result`` is the text after ``result=`` (``""`` for ``result= (timeout)``), None
    for codes other than 200; ``data`` is the parenthesised part (or a 5xx message / usage text)."""

    code: int
    result: str | None
    data: str | None
    endpos: int | None
    raw: str

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int:
        """The result as a number (most commands); raises AGIProtocolError when it is not one."""
        try:
            return int(self.result or "")
        except ValueError:
            raise AGIProtocolError(f"expected a numeric result in {self.raw!r}") from None


def parse_reply(line: str | bytes) -> AGIReply:
    """Parse one complete reply (a 520 usage block may be passed whole, lines joined by ``\\n``).

    >>> parse_reply("200 result=0 (timeout) endpos=0")
    AGIReply(code=200, result='0', data='timeout', endpos=0, raw='200 result=0 (timeout) endpos=0')
    >>> parse_reply("200 result=1 (a) b)").data
    'a) b'
    """
    text, _ = _decode(line)
    text = text.rstrip("\r\n")
    if text.startswith("520-"):
        body, _, last = text.rpartition("\n")
        if not last.startswith("520 "):
            raise AGIProtocolError(f"520 usage block without its closing line: {text[:200]!r}")
        usage = body.split("\n", 1)[1] if "\n" in body else ""
        return AGIReply(520, None, usage, None, text)
    m = _REPLY.match(text)
    if m is None:
        raise AGIProtocolError(f"not an AGI reply: {text[:200]!r}")
    code = int(m["code"])
    rest = m["rest"]
    if m["sep"] == "-":
        raise AGIProtocolError(f"multi-line reply passed one line at a time: {text[:200]!r}")
    if code != 200:
        return AGIReply(code, None, rest, None, text)
    rm = _RESULT.match(rest)
    if rm is None:
        raise AGIProtocolError(f"200 reply without result=: {text[:200]!r}")
    tail = rm["tail"]
    data: str | None = None
    endpos: int | None = None
    if tail:
        dm = _DATA.match(tail)
        em = _ENDPOS.match(tail)
        if dm is not None:
            data = dm["data"]
            endpos = int(dm["endpos"]) if dm["endpos"] is not None else None
        elif em is not None:
            endpos = int(em["endpos"])
        else:
            raise AGIProtocolError(f"cannot read the end of reply {text[:200]!r}")
    return AGIReply(200, rm["result"], data, endpos, text)


class ReplyAssembler:
    """Turns reply lines into replies: collects the 520 usage block and a ``(data)`` that a newline
    inside a variable's value broke over several lines. Pure: feed lines, get replies."""

    def __init__(self) -> None:
        self._block: list[str] = []
        self._kind: str | None = None  # "usage" or "data" while collecting

    @property
    def in_block(self) -> bool:
        return self._kind is not None

    def feed(self, line: str) -> AGIReply | None:
        line = line.rstrip("\r\n")
        if self._kind == "usage":
            self._block.append(line)
            if line.startswith("520 "):
                return self._finish()
            self._check_size()
            return None
        if self._kind == "data":
            self._block.append(line)
            joined = "\n".join(self._block)
            try:
                reply = parse_reply(joined)
            except AGIProtocolError:
                self._check_size()
                return None
            self._reset()
            return reply
        if line.startswith("520-"):
            self._kind = "usage"
            self._block = [line]
            return None
        try:
            return parse_reply(line)
        except AGIProtocolError:
            if line.startswith("200 result=") and " (" in line:
                self._kind = "data"
                self._block = [line]
                return None
            raise

    def _finish(self) -> AGIReply:
        text = "\n".join(self._block)
        self._reset()
        return parse_reply(text)

    def _reset(self) -> None:
        self._block = []
        self._kind = None

    def _check_size(self) -> None:
        if len(self._block) > MAX_CONTINUATION_LINES:
            first = self._block[0]
            self._reset()
            raise AGIProtocolError(f"reply never ended after {MAX_CONTINUATION_LINES} lines: {first[:200]!r}")


# An argument sent bare: no white space (str.isspace's, which is what \s means here), quote,
# backslash or control character (tests/test_agi_protocol.py checks every code point).
_BARE = re.compile(r'[^\s"\\\x00-\x1f\x7f]+')


@functools.lru_cache(maxsize=128)
def _check_verb(verb: str) -> int:
    """How many words the verb is; ValueError if it is not a verb (the few verbs in use are remembered)."""
    if not _VERB.match(verb):
        raise ValueError(f"not an AGI command verb: {verb!r}")
    return verb.count(" ") + 1


def _check_value(value: str) -> None:
    for ch in _FORBIDDEN:
        if ch in value:
            raise ValueError(f"AGI argument contains {ch!r}, which would end or cut the command: {value[:80]!r}")


def quote_arg(value: object) -> str:
    """One AGI argument as res_agi's ``parse_args`` reads it back, exactly and as one argument.

    A plain token is sent bare (as Asterisk's own captures show); anything else is double-quoted
    with ``"`` and ``\\`` escaped. CR, LF and NUL raise ValueError: they would end the command.

    >>> quote_arg("beep"), quote_arg(""), quote_arg("hello world")
    ('beep', '""', '"hello world"')
    >>> quote_arg('"; EXEC System rm')
    '"\\\\"; EXEC System rm"'
    """
    if type(value) is str:
        text = value
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"AGI arguments are str or int, not {type(value).__name__}")
    else:
        text = str(value)
    if _BARE.fullmatch(text):  # a plain token (so no CR, LF or NUL either): sent as it is
        return text
    _check_value(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_args(line: str) -> list[str]:
    """res_agi's ``parse_args``, in Python: how Asterisk splits a command line (for tests/simulator)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    in_word = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and not in_word:
                in_word = True
            continue
        if ch in " \t" and not quoted and not escaped:
            if in_word:
                out.append("".join(cur))
                cur = []
            in_word = False
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        in_word = True
        cur.append(ch)
        escaped = False
    if in_word:
        out.append("".join(cur))
    return out


def build_command(verb: str, *args: object) -> bytes:
    """The bytes of one command line, every argument through :func:`quote_arg`.

    >>> build_command("SET VARIABLE", "CC_TEST", "hello world")
    b'SET VARIABLE CC_TEST "hello world"\\n'
    """
    if len(args) + _check_verb(verb) > MAX_ARGS:
        raise ValueError(f"too many AGI arguments ({len(args)})")
    line = " ".join([verb, *map(quote_arg, args)]) + "\n"
    data = line.encode("utf-8")
    if len(data) > MAX_COMMAND_BYTES:
        raise ValueError(f"AGI command is {len(data)} bytes; Asterisk reads at most {MAX_COMMAND_BYTES}")
    return data
