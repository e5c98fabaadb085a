"""The benchmark scripts' command lines (each ``--set`` counts, a bad one stops them first) and
verdicts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_every_set_of_accuracy_per_second_is_kept(tmp_path: Path) -> None:
    # The misspelt key is not the last --set: were a later one to replace it, the run would go
    # on to the download (and fail there, on the missing mirror) instead of naming the key.
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "accuracy_per_second.py"),
         "--set", "train.epochs=1", "--set", "train.no_such_knob=1", "--set", "train.seed=1"],
        cwd=tmp_path,
        env={**os.environ, "BIRNN_DATA_MIRROR": str(tmp_path / "no-mirror")},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 1
    assert "--set train.no_such_knob: no such param in params.yaml" in res.stderr


def test_a_mean_just_under_the_goal_is_not_met() -> None:
    spec = importlib.util.spec_from_file_location(
        "aps", REPO / "benchmarks" / "accuracy_per_second.py"
    )
    aps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aps)
    # 0.9924, 0.9933, 0.9932 (2026-12-07): 99.297%, which two decimals showed as 99.30%.
    under = aps.verdict((0.9924 + 0.9933 + 0.9932) / 3, 0.58)
    assert "99.297%" in under and under.endswith(": not met")
    assert aps.verdict(0.9930, 0.66).endswith(": met")
    # A mean exactly on the goal, which floats make 0.99299999...
    assert aps.verdict((0.9924 + 0.9932 + 0.9934) / 3, 0.5).endswith(": met")
    assert aps.verdict(0.9935, 0.661).endswith(": not met")
