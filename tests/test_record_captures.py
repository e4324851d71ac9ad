"""tools/record_captures.py writes what tests/captures.py reads (the shared captures' format)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import tests.captures as captures

TOOL = Path(__file__).resolve().parents[1] / "tools" / "record_captures.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("record_captures", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_transcript_round_trips_through_read_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool()
    t = tool.Transcript()
    raw = [b"agi_calleridname: \xe5\xbc\xa0\xe4\xb8\x89 'x'\n", b"200 result=1 (a\\b)\r\n", b"HANGUP\n"]
    t.add("<<", raw[0])
    t.add(">>", raw[1])
    t.add("--", "AMI Hangup Local/x;1 (the caller hangs up)")
    t.add("<<", raw[2])
    (tmp_path / "x.txt").write_text(t.text())
    monkeypatch.setattr(captures, "FIXTURES", tmp_path)
    lines = captures.read_capture("x.txt")
    assert [(ln.tag, ln.data) for ln in lines] == [
        ("<<", raw[0]), (">>", raw[1]), ("--", b"AMI Hangup Local/x;1 (the caller hangs up)"), ("<<", raw[2])]
    assert all(a.t <= b.t for a, b in zip(lines, lines[1:], strict=False))


def test_every_recorded_file_is_readable_and_listed_in_the_readme() -> None:
    tool = load_tool()
    readme = (captures.FIXTURES / "README-captures.md").read_text()
    for agi_file, ami_file in [(a, b) for _, a, b in tool.SCENARIOS.values()]:
        for f in (agi_file, ami_file):
            if f is None:
                continue
            lines = captures.read_capture(f)
            assert lines and any(ln.tag == "<<" for ln in lines), f
            assert f in readme, f
