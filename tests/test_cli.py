"""The command line: --help everywhere, plain errors, exit codes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from click.testing import CliRunner

from callcentre.cli import main
from tests.conftest import test_database_url

COMMANDS = [
    [], ["serve"], ["demo"], ["simulate"], ["db"], ["db", "upgrade"], ["owners"], ["owners", "import"], ["check-config"],
    ["user"], ["user", "add"], ["user", "passwd"], ["report"], ["report", "daily"], ["report", "monthly"],
]


@pytest.mark.parametrize("args", COMMANDS)
def test_every_command_has_help(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_bad_config_exits_non_zero_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("acd:\n  rings_target: 0\n")
    result = CliRunner().invoke(main, ["-c", str(p), "check-config"])
    assert result.exit_code == 2
    assert "acd.rings_target" in result.output


def test_check_config_hides_secrets(tmp_path):
    result = CliRunner().invoke(main, ["check-config"], env={"CALLCENTRE_AMI__SECRET": "hunter2"})
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "***" in result.output


def test_user_add_and_passwd_then_the_password_works(tmp_path):
    import asyncio

    from callcentre.config import load_config
    from callcentre.storage.db import create_engine, session_factory
    from callcentre.storage.users_repo import UsersRepo

    env = {"CALLCENTRE_DATABASE__URL": test_database_url(tmp_path)}
    r = CliRunner().invoke(main, ["user", "add", "agent7", "--name", "Agent Seven", "--role", "agent",
                                  "--interface", "PJSIP/agent7", "--password-stdin"], input="first-password-1\n", env=env)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["user", "passwd", "agent7", "--password-stdin"], input="second-password-2\n", env=env)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["user", "add", "bad", "--name", "X", "--role", "agent", "--password-stdin"],
                           input="third-password-3\n", env=env)
    assert r.exit_code == 1 and "interface" in r.output

    async def check():
        engine = create_engine(load_config(None, environ=env).database)
        try:
            repo = UsersRepo(session_factory(engine))
            return (await repo.authenticate("agent7", "second-password-2")), (await repo.authenticate("agent7", "first-password-1"))
        finally:
            await engine.dispose()

    ok, old = asyncio.run(check())
    assert ok is not None and ok.login == "agent7" and old is None


def test_report_daily_runs_on_an_empty_database(tmp_path):
    env = {"CALLCENTRE_DATABASE__URL": test_database_url(tmp_path)}
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    r = CliRunner().invoke(main, ["report", "daily", "--date", "2026-11-24", "--csv", str(tmp_path / "d.csv")], env=env)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d.csv").read_text().strip() != ""
    r = CliRunner().invoke(main, ["report", "daily", "--date", "24/11/2026"], env=env)
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are a glibc setting")
def test_serve_limits_malloc_arenas_unless_the_operator_set_them():
    code = "from callcentre.runtime import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "4"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
