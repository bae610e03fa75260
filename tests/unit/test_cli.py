"""``caravan``'s lazy command table: help without imports, the real commands on use."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from caravan.cli import COMMANDS, app, load_command


def test_help_lists_every_command_without_importing_them() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom caravan.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nprint(r.exit_code)\nprint(r.output)\n"
            "print(sorted(m for m in sys.modules if m.endswith('.commands') or m == 'pydantic'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "0"
    for name in COMMANDS:
        assert f" {name} " in proc.stdout
    assert lines[-1] == "[]"  # no command module (nor pydantic) was imported


@pytest.mark.parametrize("name", list(COMMANDS))
def test_table_help_is_the_commands_own_first_line(name: str) -> None:
    real = load_command(name)
    assert real.name == name
    assert (real.help or "").strip().splitlines()[0] == COMMANDS[name].help


def test_commands_run_and_show_their_own_help() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--workload" in result.output
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output
    result = runner.invoke(app, ["benhc"])
    assert result.exit_code == 2 and "Did you mean 'bench'?" in result.output
