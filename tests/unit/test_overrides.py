"""CI's `set` input: pairs split on spaces, except inside brackets and quotes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birnn.errors import ConfigError
from birnn.overrides import split


def test_brackets_and_quotes_keep_their_spaces() -> None:
    text = "train.epochs=2  model.units=[128, 128] model.cell='gru' data.x={a: 1, b: [2, 3]}"
    assert split(text) == [
        "train.epochs=2",
        "model.units=[128, 128]",
        "model.cell='gru'",
        "data.x={a: 1, b: [2, 3]}",
    ]
    assert split("") == [] and split("   ") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model.units=[128, 128", "unclosed ']'"),
        ("model.cell='gru", 'unclosed "\'"'),
        ("train.epochs 2", "'train.epochs' is not section.key=value"),
        ("epochs=2", "'epochs=2' is not section.key=value"),
    ],
)
def test_a_bad_line_is_one_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split(text)


def test_the_command_prints_nul_terminated_pairs_for_bash() -> None:
    cmd = [sys.executable, "-m", "birnn.overrides", "train.seed=7 model.units=[16, 16]"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out == "train.seed=7\0model.units=[16, 16]\0"
    bad = subprocess.run([*cmd[:3], "model.units=[16"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("birnn.overrides: error: ")
