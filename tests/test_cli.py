"""The command line: --help everywhere, plain errors, exit codes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from callcentre.cli import main

COMMANDS = [[], ["serve"], ["demo"], ["simulate"], ["db"], ["db", "upgrade"], ["owners"], ["owners", "import"], ["check-config"]]


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
