"""The benchmark scripts' command lines: each ``--set`` counts, and a bad one stops them first."""

from __future__ import annotations

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
