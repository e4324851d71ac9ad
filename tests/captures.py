"""Read the byte-exact Asterisk captures in tests/fixtures/ (format: ``SECONDS TAG 'python-repr'``).

``<<`` came from Asterisk, ``>>`` was sent to Asterisk, ``--`` is a note (EOF, end of script).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
# One line in ami-sip-call.txt has lost its timestamp (" << 'Value: \r\n'"): it takes the previous one.
_LINE = re.compile(r"^\s*(?P<t>\d+\.\d+)? ?(?P<tag><<|>>|--) (?P<rest>.*)$")


@dataclass(frozen=True)
class CaptureLine:
    t: float
    tag: str  # "<<" from Asterisk, ">>" to Asterisk, "--" note
    data: bytes  # for notes: the note text encoded as UTF-8


def read_capture(name: str) -> list[CaptureLine]:
    out: list[CaptureLine] = []
    for raw in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        m = _LINE.match(raw)
        if m is None:
            raise ValueError(f"{name}: unreadable capture line {raw!r}")
        rest = m["rest"]
        if m["tag"] == "--":
            try:
                note = ast.literal_eval(rest)
            except (ValueError, SyntaxError):
                note = rest
            data = note.encode("utf-8") if isinstance(note, str) else note
        else:
            value = ast.literal_eval(rest)
            data = value.encode("latin-1") if isinstance(value, str) else value
        t = float(m["t"]) if m["t"] else (out[-1].t if out else 0.0)
        out.append(CaptureLine(t, m["tag"], data))
    return out


def from_asterisk(name: str) -> bytes:
    """Every byte Asterisk sent in one capture, concatenated."""
    return b"".join(line.data for line in read_capture(name) if line.tag == "<<")


def ami_messages(name: str) -> list[dict[str, str]]:
    """The AMI messages Asterisk sent (banner excluded), each as an ordered dict of its fields."""
    text = from_asterisk(name).decode("utf-8", "replace")
    msgs: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.split("\r\n"):
        if line.startswith("Asterisk Call Manager/"):
            continue
        if line == "":
            if cur:
                msgs.append(cur)
                cur = {}
            continue
        key, _, value = line.partition(": ")
        cur[key] = value
    if cur:
        msgs.append(cur)
    return msgs
