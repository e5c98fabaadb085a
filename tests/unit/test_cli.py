"""`birnn` and `python -m birnn`: every subcommand listed, each with its own complete help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birnn.cli import COMMANDS


def birnn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birnn", *args], capture_output=True, text=True, timeout=120
    )


def test_birnn_help_lists_every_subcommand() -> None:
    res = birnn("--help")
    assert res.returncode == 0, res.stderr
    for name in ("predict", "promote", "sweep", "stack"):
        assert name in COMMANDS
        assert f"\n    {name} " in res.stdout, res.stdout
    bad = birnn("frobnicate")
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
    assert birnn().returncode == 2


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_complete_help(command: str) -> None:
    res = birnn(command, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: birnn {command}"), res.stdout[:200]
