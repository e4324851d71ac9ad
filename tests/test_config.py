"""Configuration: validated at start-up, named errors, environment overrides, secrets outside git."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcentre.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid_and_matches_the_documented_defaults():
    cfg = load_config(REPO / "config.yaml", environ={})
    assert cfg.acd.rings_target == 2 and cfg.acd.ring_cycle_seconds == 5
    assert cfg.acd.ring_timeout_seconds == 10
    assert cfg.tickets.promises.general_minutes == 30 and cfg.tickets.promises.major_minutes == 360
    assert cfg.database.url.startswith("sqlite+aiosqlite://")
    assert cfg.ami_secret() is None  # no secret ships in the repository


def test_environment_overrides_a_key():
    cfg = load_config(REPO / "config.yaml", environ={"CALLCENTRE_ACD__RING_CYCLE_SECONDS": "6", "CALLCENTRE_AMI__HOST": "10.1.2.3"})
    assert cfg.acd.ring_cycle_seconds == 6 and cfg.acd.ring_timeout_seconds == 12
    assert cfg.ami.host == "10.1.2.3"


@pytest.mark.parametrize(
    "yaml_text, key, reason",
    [
        ("acd:\n  ring_cycle_seconds: -1\n", "acd.ring_cycle_seconds", "greater than 0"),
        ("agi:\n  allowed_peers: [not-an-ip]\n", "agi.allowed_peers", "not an IP address"),
        ("ivr:\n  menu: {'1': repair}\n", "ivr", "lead to 'agent'"),
        ("ivr:\n  menu: {'12': agent}\n", "ivr.menu", "one DTMF digit"),
        ("centre:\n  timezone: Mars/Olympus\n", "centre.timezone", "unknown time zone"),
        ("database:\n  url: mysql://x\n", "database.url", "must start with"),
        ("amii:\n  host: x\n", "amii", "unknown key"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(tmp_path, yaml_text, key, reason):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    assert key in str(err.value) and reason in str(err.value)


def test_unreadable_or_invalid_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("acd: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_secrets_come_from_environment_or_file(tmp_path):
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text("s3cret\n")
    p = tmp_path / "c.yaml"
    p.write_text(f"ami:\n  secret_file: {secret_file}\n")
    assert load_config(p, environ={}).ami_secret() == "s3cret"
    assert load_config(p, environ={"CALLCENTRE_AMI_SECRET": "fromenv"}).ami_secret() == "fromenv"
    p.write_text(f"ami:\n  secret_file: {tmp_path / 'nope'}\n")
    with pytest.raises(ConfigError, match="ami.secret_file"):
        load_config(p, environ={})


def test_secrets_are_not_in_the_repr():
    cfg = load_config(None, environ={"CALLCENTRE_AMI__SECRET": "hunter2"})
    assert "hunter2" not in repr(cfg)


def test_the_placeholder_ami_secret_is_refused():
    with pytest.raises(ConfigError, match="placeholder"):
        load_config(None, environ={"CALLCENTRE_AMI_SECRET": "CHANGE-ME-callcentre-ami-secret"})


def test_times_in_environment_overrides_stay_times():
    cfg = load_config(None, environ={"CALLCENTRE_SERVICE__CALLBACK__CALLING_HOURS_END": "21:30",
                                     "CALLCENTRE_ACD__BUSINESS_HOURS__OPEN": "08:00"})
    assert cfg.service.callback.calling_hours_end == "21:30" and cfg.acd.business_hours.open == "08:00"


def test_the_shutdown_grace_must_cover_the_longest_recording():
    """SIGTERM lets calls in progress finish for agi.shutdown_grace_seconds: a caller who has just started
    the longest recording must still get their ticket number, so a shorter grace is refused."""
    assert load_config(REPO / "config.yaml", environ={}).agi.shutdown_grace_seconds == 75
    with pytest.raises(ConfigError, match=r"agi.shutdown_grace_seconds \(75\).*ivr.record_max_seconds 120.*at least 135"):
        load_config(REPO / "config.yaml", environ={"CALLCENTRE_IVR__RECORD_MAX_SECONDS": "120"})
    cfg = load_config(REPO / "config.yaml", environ={"CALLCENTRE_IVR__RECORD_MAX_SECONDS": "120",
                                                     "CALLCENTRE_AGI__SHUTDOWN_GRACE_SECONDS": "135"})
    assert cfg.agi.shutdown_grace_seconds == 135


def test_the_domain_takes_only_schema_models_from_the_configuration():
    """The schema stands apart from its loader: what the domain imports from callcentre.config is a
    model of callcentre.config.schema, never the YAML/environment loader."""
    import ast

    from callcentre.config import schema

    seen = []
    for path in sorted((REPO / "callcentre" / "domain").rglob("*.py")):  # domain/acd/ too
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("callcentre.config"):
                assert node.module == "callcentre.config.schema", f"{path.name} imports from {node.module}"
                for alias in node.names:
                    seen.append((path.name, alias.name))
                    assert hasattr(schema, alias.name), f"{path.name} imports {alias.name} from the configuration"
            if isinstance(node, ast.Import):
                assert not any(a.name in ("yaml", "callcentre.config.loader") for a in node.names), path.name
    assert ("promises.py", "PromisesConfig") in seen  # the scan did see the domain's imports
    assert ("distributor.py", "ACDConfig") in seen  # and those of its sub-packages


def test_a_config_built_in_code_reads_its_secrets_from_the_process_environment(monkeypatch, tmp_path):
    from callcentre.config import Config, WebConfig
    from callcentre.config.loader import ami_secret, environ, web_session_key

    key_file = tmp_path / "session.key"
    key_file.write_text("from-a-file\n", encoding="utf-8")
    cfg = Config(web=WebConfig(session_key_file=key_file))
    monkeypatch.setenv("CALLCENTRE_AMI_SECRET", "process-secret")
    monkeypatch.delenv("CALLCENTRE_WEB_SESSION_KEY", raising=False)
    assert environ(cfg)["CALLCENTRE_AMI_SECRET"] == "process-secret"
    assert ami_secret(cfg) == cfg.ami_secret() == "process-secret"
    assert web_session_key(cfg) == cfg.web_session_key() == "from-a-file"
    loaded = load_config(None, environ={"CALLCENTRE_AMI_SECRET": "loaded"})
    assert environ(loaded) == {"CALLCENTRE_AMI_SECRET": "loaded"}  # the environment it was loaded from, not the process's
    assert loaded.ami_secret() == "loaded"
