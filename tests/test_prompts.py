"""The committed prompts: every name the IVR and speech.py use exists in zh and en as a WAV that
Asterisk can play as-is, the catalogue and the files match one to one, and tools/make_prompts.py
keeps them in step (idempotent, --check, --only)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import yaml

from callcentre.config import Config
from callcentre.domain import speech
from callcentre.domain.ivr import required_prompts

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "prompts"
LANGS = ("zh", "en")

# The names the IVR is written against (issue "hotline call path", point 9). A rename must fail here.
REQUIRED = {
    "greeting", "main-menu-intro", "menu-self-service", "menu-repair", "menu-complaint", "menu-agent",
    "menu-emergency", "menu-english", "menu-repeat", "press-star", "press-hash",
    "invalid-choice", "no-input", "transfer-agent", "goodbye", "thank-you", "system-busy-agent", "please-wait",
    "unknown-caller", "enter-building", "enter-unit", "you-entered", "building", "unit-word",
    "confirm-or-retry", "unit-not-found", "enter-pin", "pin-wrong",
    "fee-balance-is", "fee-nothing-owed", "fee-due-by", "no-open-ticket", "latest-ticket-is",
    "ticket-status-is", "status-new", "status-acknowledged", "status-dispatched", "status-in_progress",
    "status-resolved", "status-closed", "status-reopened",
    "repair-menu-intro", "complaint-menu-intro", "emergency-menu-intro",
    "cat-water", "cat-electrical", "cat-lift", "cat-doors", "cat-public-areas", "cat-other",
    "ccat-property", "ccat-government", "ccat-building", "ccat-equipment", "ccat-security",
    "ccat-environment", "ccat-services", "ccat-disputes", "emg-water-leak", "emg-lift", "emg-gas",
    "record-repair", "record-complaint", "record-message", "ticket-created", "promise-by",
    "emergency-connecting", "apology",
    "queue-position", "queue-expected-wait", "minutes-word", "seconds-word", "callback-offer",
    "callback-registered", "no-agents", "closed-hours", "leave-message", "message-saved", "max-wait-reached",
    "rate-service", "thanks-rating", "survey-intro", "survey-done", "survey-solved-or-not", "survey-reopened",
    "survey-closed", "language-switched",
    "num-100", "num-1000", "num-10000", "num-million", "zh-shi", "zh-bai", "zh-qian", "zh-wan", "zh-ling",
    "zh-liang", "yuan", "jiao", "fen", "and", "credit", "day-word", "o-clock", "minute-word",
} | {f"press-{i}" for i in range(10)} | {f"digit-{i}" for i in range(10)} | {f"num-{i}" for i in range(21)} \
  | {f"num-{i}" for i in range(30, 100, 10)} | {f"month-{i}" for i in range(1, 13)}


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_prompts", REPO / "tools" / "make_prompts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mp = _load_tool()


def catalogue() -> dict[str, dict]:
    return yaml.safe_load((PROMPTS / "catalogue.yaml").read_text(encoding="utf-8"))["prompts"]


def test_catalogue_has_every_required_name_in_both_languages() -> None:
    cat = catalogue()
    assert REQUIRED - set(cat) == set()
    assert speech.ALL_PROMPTS - set(cat) == set()
    assert required_prompts(Config()) - set(cat) == set()
    for name, entry in cat.items():
        assert set(entry) == set(LANGS), name


def test_greeting_names_the_centre_and_prompts_say_i_not_we() -> None:
    cat = catalogue()
    assert "{centre}" in cat["greeting"]["zh"] and "{centre}" in cat["greeting"]["en"]
    jobs = {j.key: j for j in mp.load_jobs(PROMPTS / "catalogue.yaml", dict(mp.DEFAULT_CENTRE))}
    assert jobs["zh/greeting"].text == "您好，物业客户服务中心为您服务。"
    assert "Property Service Centre" in jobs["en/greeting"].text
    # Commitments are made in the first person (DOMAIN.md, telephone etiquette).
    for name in ("ticket-created", "survey-reopened", "message-saved", "callback-registered", "transfer-agent"):
        assert re.search(r"\bI\b", jobs[f"en/{name}"].text), name
        assert "我" in jobs[f"zh/{name}"].text, name


@pytest.mark.parametrize("lang", LANGS)
def test_every_prompt_is_a_playable_wav(lang: str) -> None:
    names = set(catalogue())
    for name in sorted(names):
        path = PROMPTS / lang / f"{name}.wav"
        assert path.is_file(), f"missing {path.relative_to(REPO)}"
        with wave.open(str(path), "rb") as w:
            assert w.getcomptype() == "NONE", name
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1), name
            frames = w.getnframes()
            assert 0 < frames < 30 * 8000, name
            audio = w.readframes(frames)
        assert len(audio) == 2 * frames, f"{name}: truncated"
        assert any(audio), f"{name}: silent"


def test_no_orphans_or_stray_files() -> None:
    names = set(catalogue())
    for lang in LANGS:
        found = {p.name for p in (PROMPTS / lang).iterdir()}
        assert found == {f"{n}.wav" for n in names}, lang


def test_total_size_stays_modest() -> None:
    total = sum(p.stat().st_size for lang in LANGS for p in (PROMPTS / lang).glob("*.wav"))
    assert total < 15_000_000, f"{total / 1e6:.1f} MB of prompts"


def test_make_prompts_check_passes_on_the_committed_files() -> None:
    # --check uses neither espeak-ng nor sox, so it runs everywhere.
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_prompts.py"), "--check"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


# ------------------------------------------------------------------ the tool, on a copy of the prompts


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "prompts"
    shutil.copytree(PROMPTS, d, ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.setattr(mp, "PROMPTS_DIR", d)
    monkeypatch.setattr(mp, "CATALOGUE", d / "catalogue.yaml")
    monkeypatch.setattr(mp, "MANIFEST", d / "manifest.json")
    monkeypatch.setattr(mp, "CONFIG", tmp_path / "config.yaml")  # absent: default names
    return d


def test_check_lists_missing_stale_and_orphan_files(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mp.main(["--check"]) == 0
    (copy / "zh" / "goodbye.wav").unlink()
    with wave.open(str(copy / "en" / "thank-you.wav"), "wb") as w:  # valid WAV, but not what was rendered
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00" * 800)
    (copy / "en" / "old-prompt.wav").write_bytes(b"RIFF")
    text = (copy / "catalogue.yaml").read_text(encoding="utf-8")
    (copy / "catalogue.yaml").write_text(text.replace("请稍候。", "请您稍候。"), encoding="utf-8")
    capsys.readouterr()
    assert mp.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "zh/goodbye.wav: missing" in out
    assert "en/thank-you.wav: stale (file differs" in out
    assert "en/old-prompt.wav: orphan" in out
    assert "zh/please-wait.wav: stale (text" in out  # "请稍候。" is please-wait's whole text
    assert "zh/transfer-agent.wav" in out  # contains "请稍候。" too
    assert "en/please-wait.wav" not in out


def test_a_centre_name_in_config_makes_the_greeting_stale(copy: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("centre:\n  name: 阳光花园物业服务中心\n", encoding="utf-8")
    assert mp.centre_names(tmp_path / "config.yaml") == {"zh": "阳光花园物业服务中心", "en": "Property Service Centre"}
    assert mp.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "zh/greeting.wav" in out and "zh/survey-intro.wav" in out and "en/greeting.wav" not in out


def test_bad_config_and_bad_catalogue_are_clear_errors(copy: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("centre: [unclosed\n", encoding="utf-8")
    assert mp.main(["--check"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    (tmp_path / "config.yaml").unlink()
    text = (copy / "catalogue.yaml").read_text(encoding="utf-8")
    (copy / "catalogue.yaml").write_text(text.replace('press-1: {zh: "请按一。"', 'press-1: {zh: "请按1。"'), encoding="utf-8")
    assert mp.main(["--check"]) == 2
    assert "press-1.zh: the pinyin voice misreads ASCII" in capsys.readouterr().err


def test_unknown_only_name_is_refused(copy: Path, capsys) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng/sox not installed")
    assert mp.main(["--only", "no-such-prompt"]) == 2
    assert "not in the catalogue" in capsys.readouterr().err


def test_render_is_idempotent_and_reproducible(copy: Path, capsys) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng/sox not installed")
    before = (copy / "zh" / "greeting.wav").read_bytes()
    (copy / "zh" / "greeting.wav").unlink()
    (copy / "en" / "digit-7.wav").write_bytes(b"junk")
    assert mp.main(["--only", "greeting", "--only", "en/digit-7"]) == 0
    out = capsys.readouterr().out
    assert "3 prompt file(s) selected, 1 up to date, 2 to render" in out
    # Same text, voice and pipeline → the same bytes: re-rendering does not churn the repository.
    assert (copy / "zh" / "greeting.wav").read_bytes() == before
    assert mp.main(["--check"]) == 0
    assert mp.main(["--only", "greeting"]) == 0
    assert "0 to render" in capsys.readouterr().out
