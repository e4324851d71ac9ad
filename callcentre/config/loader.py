"""Loading the configuration: one YAML file, environment overrides, and secrets from outside git.

Precedence (highest first): environment variables, the YAML file, built-in defaults
(:mod:`callcentre.config.schema`).

* ``CALLCENTRE_<SECTION>__<KEY>=value`` overrides one key, e.g. ``CALLCENTRE_AMI__HOST=10.0.0.5``
  or ``CALLCENTRE_ACD__RING_CYCLE_SECONDS=6``. Values are parsed as YAML scalars, so ``6`` is a number
  and ``[a, b]`` a list.
* Secrets never live in the YAML file in git: ``CALLCENTRE_AMI_SECRET`` / ``ami.secret_file`` and
  ``CALLCENTRE_WEB_SESSION_KEY`` / ``web.session_key_file``.

A bad value raises :class:`ConfigError` whose message names the key and the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from callcentre.config.schema import Config

ENV_PREFIX = "CALLCENTRE_"


class ConfigError(Exception):
    """The configuration cannot be used; the message is meant for a person."""


def environ(cfg: Config) -> dict[str, str]:
    """The environment ``cfg`` was loaded from (the process's own for a Config built in code)."""
    return cfg._environ if cfg._environ is not None else dict(os.environ)


def ami_secret(cfg: Config) -> str | None:
    """The AMI secret from CALLCENTRE_AMI_SECRET, else ami.secret_file, else ami.secret."""
    value = _secret(environ(cfg), ENV_PREFIX + "AMI_SECRET", cfg.ami.secret_file, cfg.ami.secret, "ami.secret_file")
    if value and value.startswith("CHANGE-ME"):
        raise ConfigError(
            "ami secret: still the placeholder from dialplans/manager_callcentre.conf; "
            "set a real secret there and in CALLCENTRE_AMI_SECRET"
        )
    return value


def web_session_key(cfg: Config) -> str | None:
    return _secret(
        environ(cfg), ENV_PREFIX + "WEB_SESSION_KEY", cfg.web.session_key_file, cfg.web.session_key,
        "web.session_key_file",
    )


def _secret(environ: dict[str, str], env_name: str, path: Path | None, inline: str | None, key: str) -> str | None:
    value = environ.get(env_name)
    if value:
        return value
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    return inline


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Turn CALLCENTRE_SECTION__KEY[__SUB]=value into a nested dict."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if raw == "" or re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", raw.strip()):
            value: Any = raw.strip()  # YAML 1.1 would read 20:00 as the number 1200
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: conflicts with another override")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        lines.append(f"  {key}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError with a readable message."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} does not exist") from exc
        except OSError as exc:
            raise ConfigError(f"config file {p}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: the top level must be a mapping of sections")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    cfg._environ = environ
    # Resolve secrets early so a missing secret file is reported at start-up.
    cfg.ami_secret()
    cfg.web_session_key()
    return cfg
