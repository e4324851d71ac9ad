#!/usr/bin/env python3
"""Render prompts/catalogue.yaml to prompts/<lang>/<name>.wav with espeak-ng and sox.

The WAV files are committed so that nobody who runs the call centre needs a speech engine; this
script is only for whoever changes a prompt's text. It is idempotent: prompts/manifest.json keeps,
per file, a hash of what it was rendered from (text, voice, speed, pipeline) and of the file
itself, and only files whose source or content changed are rendered again.

    python tools/make_prompts.py              # render what is missing or stale, drop orphans
    python tools/make_prompts.py --only NAME  # just this prompt (both languages, or zh/NAME)
    python tools/make_prompts.py --check      # exit 1 listing missing/stale/orphan files

Several hotlines (config ``hotlines:``): each hotline's own prompts go to
prompts/<its prompt dir, default hotlines/<id>>/<lang>/<name>.wav: the greeting with the hotline's name
("您好，<name>物业客户服务中心为您服务。"; ``greeting:`` overrides the text) and any ``prompts.texts``. They
are read from --config and from the two-estate example (examples/two-estates.yaml), whose WAVs are
committed. ``--only hotlines/<id>`` renders one hotline's; ``--only NAME`` only the shared NAME.

--check needs neither espeak-ng nor sox, so CI can run it anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMPTS_DIR = ROOT / "prompts"
CATALOGUE = PROMPTS_DIR / "catalogue.yaml"
MANIFEST = PROMPTS_DIR / "manifest.json"
CONFIG = ROOT / "config.yaml"
# Configurations whose hotlines' own prompts are rendered and committed besides --config's.
HOTLINE_EXAMPLES = (ROOT / "examples" / "two-estates.yaml",)
HOTLINE_GREETING = {"zh": "您好，{name}物业客户服务中心为您服务。", "en": "Hello, this is the {name} property service centre, at your service."}
HOTLINE_DIR_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,3}$")

LANGS = ("zh", "en")
DEFAULT_CENTRE = {"zh": "物业客户服务中心", "en": "Property Service Centre"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
CJK_RE = re.compile(r"[\u3400-\u9fff]")

RATE = 8000
# 8 kHz 16-bit mono PCM, no dither (so output is reproducible), leading and trailing silence
# trimmed, peak-normalised to -3 dBFS, 80 ms of silence at the end so that pieces joined at run
# time (numbers, dates) do not run into each other. Changing this string re-renders everything.
SOX_EFFECTS = (
    "silence", "1", "0.02", "-50d",
    "reverse", "silence", "1", "0.02", "-50d", "reverse",
    "gain", "-n", "-3",
    "pad", "0", "0.08",
)
PIPELINE = f"espeak-ng|sox -D -r {RATE} -b 16 -c 1 -e signed-integer|" + " ".join(SOX_EFFECTS)
MAX_SECONDS = 30.0


class CatalogueError(Exception):
    """The catalogue or config cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Job:
    """One file to produce: prompts/<lang>/<name>.wav from this text and voice."""

    lang: str
    name: str
    text: str
    voice: str
    speed: int
    dir: str = ""  # a hotline's own prompts: hotlines/<id>

    @property
    def key(self) -> str:
        return f"{self.dir}/{self.lang}/{self.name}" if self.dir else f"{self.lang}/{self.name}"

    @property
    def path(self) -> Path:
        return PROMPTS_DIR / self.dir / self.lang / f"{self.name}.wav"

    @property
    def source_hash(self) -> str:
        blob = json.dumps(
            {"text": self.text, "voice": self.voice, "speed": self.speed, "pipeline": PIPELINE},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def centre_names(config_path: Path) -> dict[str, str]:
    """The centre's name per language: config `centre.name` where it suits the language.

    A Chinese name is used for zh (an English voice cannot read it) and a Latin one for en;
    the other language keeps the default, so one config key serves both.
    """
    names = dict(DEFAULT_CENTRE)
    if not config_path.exists():
        return names
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{config_path}: not valid YAML: {exc}") from exc
    centre = data.get("centre") if isinstance(data, dict) else None
    name = centre.get("name") if isinstance(centre, dict) else None
    if name is None:
        return names
    if not isinstance(name, str) or not name.strip():
        raise CatalogueError(f"{config_path}: centre.name must be a non-empty string")
    name = name.strip()
    names["zh" if CJK_RE.search(name) else "en"] = name
    return names


def load_jobs(catalogue: Path, centre: dict[str, str]) -> list[Job]:
    """Read and validate the catalogue; every problem found is reported at once."""
    try:
        data = yaml.safe_load(catalogue.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{catalogue}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict):
        raise CatalogueError(f"{catalogue}: needs a 'prompts' mapping")
    voices = data.get("voices")
    errors: list[str] = []
    if not isinstance(voices, dict) or set(voices) != set(LANGS):
        raise CatalogueError(f"{catalogue}: 'voices' needs exactly {LANGS}")
    for lang in LANGS:
        v = voices[lang]
        if not (isinstance(v, dict) and isinstance(v.get("voice"), str) and isinstance(v.get("speed"), int)):
            errors.append(f"voices.{lang}: needs {{voice: str, speed: int}}")
    if errors:
        raise CatalogueError("\n".join(errors))
    jobs: list[Job] = []
    for name, entry in data["prompts"].items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append(f"{name!r}: names are lower-case letters, digits, '-' and '_'")
            continue
        if not isinstance(entry, dict) or set(entry) != set(LANGS):
            errors.append(f"{name}: needs exactly the languages {LANGS}")
            continue
        for lang in LANGS:
            item = entry[lang]
            voice, speed = voices[lang]["voice"], voices[lang]["speed"]
            if isinstance(item, dict):
                text = item.get("text")
                voice = item.get("voice", voice)
                speed = item.get("speed", speed)
                extra = set(item) - {"text", "voice", "speed"}
                if extra:
                    errors.append(f"{name}.{lang}: unknown keys {sorted(extra)}")
            else:
                text = item
            if not isinstance(text, str) or not text.strip():
                errors.append(f"{name}.{lang}: empty text")
                continue
            if not isinstance(voice, str) or not isinstance(speed, int) or not 80 <= speed <= 450:
                errors.append(f"{name}.{lang}: bad voice/speed")
                continue
            text = text.replace("{centre}", centre[lang]).strip()
            if lang == "zh" and voice == voices["zh"]["voice"] and re.search(r"[A-Za-z0-9]", text):
                errors.append(f"{name}.zh: the pinyin voice misreads ASCII letters/digits: {text!r}")
            if "{" in text or "}" in text:
                errors.append(f"{name}.{lang}: unknown placeholder in {text!r}")
            jobs.append(Job(lang, name, text, voice, speed))
    if errors:
        raise CatalogueError("catalogue problems:\n  " + "\n  ".join(errors))
    return jobs


def _voices() -> dict[str, dict]:
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    return data["voices"]


def hotline_jobs(configs: list[Path]) -> list[Job]:
    """Each hotline's own prompts in these configurations: the greeting with its name, and ``prompts.texts``.

    The same hotline in two files must say the same; a hotline prompt with no text (one a person
    recorded) is not rendered, and is not an orphan either (see orphans()).
    """
    voices = _voices()
    jobs: dict[str, Job] = {}
    errors: list[str] = []
    for path in configs:
        if not path.exists():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
        hotlines = data.get("hotlines") if isinstance(data, dict) else None
        if not hotlines:
            continue
        if not isinstance(hotlines, list):
            raise CatalogueError(f"{path}: hotlines must be a list")
        for i, h in enumerate(hotlines):
            where = f"{path.name}: hotlines[{i}]"
            if not isinstance(h, dict) or not isinstance(h.get("id"), str) or not NAME_RE.match(h["id"]):
                errors.append(f"{where}: needs an id (lower-case letters, digits, '-' and '_')")
                continue
            prompts = h.get("prompts") or {}
            folder = prompts.get("dir") or f"hotlines/{h['id']}"
            if not HOTLINE_DIR_RE.match(folder):
                errors.append(f"{where}.prompts.dir: {folder!r} is not a relative folder")
                continue
            own = prompts.get("own", ["greeting"])
            texts = dict(prompts.get("texts") or {})
            names = h.get("name") or {}
            if "greeting" in own and "greeting" not in texts:
                greeting = dict(h.get("greeting") or {})
                for lang in LANGS:
                    if lang not in greeting:
                        name = names.get(lang)
                        if not name or (lang == "zh" and not CJK_RE.search(name)):
                            errors.append(f"{where}: the {lang} greeting needs name.{lang}"
                                          f"{' in Chinese' if lang == 'zh' else ''} (or greeting.{lang})")
                            continue
                        greeting[lang] = HOTLINE_GREETING[lang].format(name=name.strip())
                texts["greeting"] = greeting
            for pname, entry in texts.items():
                if not isinstance(pname, str) or not NAME_RE.match(pname):
                    errors.append(f"{where}.prompts.texts: {pname!r} is not a prompt name")
                    continue
                for lang in LANGS:
                    text = (entry or {}).get(lang) if isinstance(entry, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        errors.append(f"{where}: no {lang} text for {pname}")
                        continue
                    text = text.strip()
                    if lang == "zh" and re.search(r"[A-Za-z0-9]", text):
                        errors.append(f"{where}: {pname}.zh: the pinyin voice misreads ASCII letters/digits: {text!r}")
                        continue
                    job = Job(lang, pname, text, voices[lang]["voice"], voices[lang]["speed"], folder)
                    other = jobs.get(job.key)
                    if other is not None and other.text != job.text:
                        errors.append(f"{where}: {job.key} differs from the same hotline's in another file")
                        continue
                    jobs[job.key] = job
    if errors:
        raise CatalogueError("hotline prompt problems:\n  " + "\n  ".join(errors))
    return list(jobs.values())


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wav_problem(path: Path) -> str | None:
    """Why this file is not a prompt Asterisk can play as-is, or None."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getframerate() != RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
                return f"{w.getframerate()} Hz, {8 * w.getsampwidth()}-bit, {w.getnchannels()} channel(s)"
            frames = w.getnframes()
    except (wave.Error, EOFError, OSError) as exc:
        return f"not a readable WAV ({exc})"
    if frames == 0:
        return "empty"
    if frames / RATE > MAX_SECONDS:
        return f"{frames / RATE:.1f} s long"
    return None


def load_manifest() -> dict[str, dict[str, str]]:
    if not MANIFEST.exists():
        return {}
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged manifest only costs a full re-render
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in (files or {}).items() if isinstance(v, dict)}


def save_manifest(files: dict[str, dict[str, str]]) -> None:
    """Write atomically, so an interrupted run never leaves half a manifest."""
    # One line per file keeps diffs of the committed manifest readable.
    lines = [
        f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}" for key, value in sorted(files.items())
    ]
    body = '{"version": 1, "files": {\n' + ",\n".join(lines) + "\n}}\n"
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, MANIFEST)


def problem(job: Job, manifest: dict[str, dict[str, str]]) -> str | None:
    """Why job's file must be rendered again (missing/stale), or None when it is up to date."""
    if not job.path.exists():
        return "missing"
    entry = manifest.get(job.key)
    if entry is None:
        return "stale (not in manifest.json)"
    if entry.get("source") != job.source_hash:
        return "stale (text, voice or pipeline changed)"
    if entry.get("sha256") != file_sha256(job.path):
        return "stale (file differs from the one rendered)"
    bad = wav_problem(job.path)
    return f"bad WAV: {bad}" if bad else None


def orphans(jobs: list[Job]) -> list[Path]:
    """Files in the shared language folders that no prompt makes, and rendered hotline prompts (in the
    manifest) that no configuration asks for any more; a hotline recording a person made is kept."""
    wanted = {job.path for job in jobs}
    found: list[Path] = []
    for lang in LANGS:
        d = PROMPTS_DIR / lang
        if d.is_dir():
            found += [p for p in sorted(d.iterdir()) if p.is_file() and p not in wanted]
    rendered = {PROMPTS_DIR / f"{key}.wav" for key in load_manifest() if key.count("/") > 1}
    found += sorted(p for p in rendered if p.exists() and p not in wanted)
    return found


def render(job: Job) -> None:
    """espeak-ng → sox → prompts/<lang>/<name>.wav, replaced atomically only when all went well."""
    job.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prompt-") as tmp:
        raw = Path(tmp) / "raw.wav"
        out = Path(tmp) / "out.wav"
        # Text on stdin: nothing in it can be taken for an option.
        subprocess.run(
            ["espeak-ng", "-b", "1", "-v", job.voice, "-s", str(job.speed), "-w", str(raw)],
            input=job.text.encode("utf-8"),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["sox", "-D", str(raw), "-r", str(RATE), "-b", "16", "-c", "1", "-e", "signed-integer", str(out),
             *SOX_EFFECTS],
            check=True,
            capture_output=True,
        )
        bad = wav_problem(out)
        if bad:
            raise RuntimeError(f"{job.key}: rendered file is unusable: {bad}")
        staged = job.path.with_suffix(".wav.tmp")
        shutil.copyfile(out, staged)
        os.replace(staged, job.path)


def check(jobs: list[Job]) -> int:
    manifest = load_manifest()
    problems = [f"{job.key}.wav: {why}" for job in jobs if (why := problem(job, manifest))]
    problems += [f"{p.relative_to(PROMPTS_DIR)}: orphan (not in the catalogue)" for p in orphans(jobs)]
    if problems:
        print(f"{len(problems)} prompt file(s) need `python tools/make_prompts.py`:")
        for line in problems:
            print(f"  {line}")
        return 1
    total = sum(job.path.stat().st_size for job in jobs)
    print(f"all {len(jobs)} prompt files are up to date ({total / 1e6:.1f} MB)")
    return 0


def build(jobs: list[Job], only: list[str], force: bool, workers: int) -> int:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (Debian: apt-get install espeak-ng sox)", file=sys.stderr)
            return 2
    manifest = load_manifest()
    if only:
        # NAME is a shared prompt (both languages); a hotline's own are hotlines/<id> or their full key.
        known = {job.name for job in jobs if not job.dir} | {job.key for job in jobs} | {job.dir for job in jobs if job.dir}
        unknown = [o for o in only if o not in known]
        if unknown:
            print(f"error: not in the catalogue: {', '.join(unknown)}", file=sys.stderr)
            return 2
        selected = [job for job in jobs if (not job.dir and job.name in only) or job.key in only or
                    (job.dir and job.dir in only)]
    else:
        selected = jobs
    todo = [job for job in selected if force or problem(job, manifest)]
    print(f"{len(selected)} prompt file(s) selected, {len(selected) - len(todo)} up to date, {len(todo)} to render")
    failures = 0
    started = time.monotonic()

    def one(job: Job) -> tuple[Job, str | None]:
        try:
            render(job)
        except subprocess.CalledProcessError as exc:
            err = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
            return job, f"{exc.cmd[0]} failed ({exc.returncode}): {err}"
        except (OSError, RuntimeError) as exc:
            return job, str(exc)
        return job, None

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, (job, err) in enumerate(pool.map(one, todo), 1):
                if err:
                    failures += 1
                    print(f"[{i}/{len(todo)}] {job.key}: FAILED: {err}", flush=True)
                    continue
                manifest[job.key] = {"source": job.source_hash, "sha256": file_sha256(job.path)}
                with wave.open(str(job.path), "rb") as w:
                    secs = w.getnframes() / RATE
                print(f"[{i}/{len(todo)}] {job.key}: {secs:.1f} s  {job.text}", flush=True)
    finally:
        if not only:
            wanted = {job.key for job in jobs}
            for key in [k for k in manifest if k not in wanted]:
                del manifest[key]
            for path in orphans(jobs):
                print(f"removed orphan {path.relative_to(PROMPTS_DIR)}")
                path.unlink()
        save_manifest(manifest)
    total = sum(job.path.stat().st_size for job in jobs if job.path.exists())
    print(
        f"done in {time.monotonic() - started:.1f} s: {len(todo) - failures} rendered, {failures} failed; "
        f"{len(jobs)} files, {total / 1e6:.1f} MB in all"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list missing/stale/orphan files; exit 1 if any")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="render only this prompt (NAME or LANG/NAME); may be repeated")
    parser.add_argument("--force", action="store_true", help="render even files that are up to date")
    parser.add_argument("--config", type=Path, default=CONFIG, help="where centre.name is read (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="renders run in parallel")
    args = parser.parse_args(argv)
    try:
        jobs = load_jobs(CATALOGUE, centre_names(args.config))
        jobs += hotline_jobs([args.config, *HOTLINE_EXAMPLES])
    except CatalogueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(jobs)
    return build(jobs, args.only, args.force, max(1, args.jobs))


if __name__ == "__main__":
    sys.exit(main())
