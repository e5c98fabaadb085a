"""A small search space over this repo's params.yaml, for the sweep's unit tests."""

from __future__ import annotations

import yaml

from birnn.sweep.space import SweepConfig, sweep_from_dict
from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
SPACE = {
    "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "train.batch_size": [64, 128],
    "model.cell": ["lstm", "gru"],
    "model.units": {"low": 32, "high": 128, "step": 32},
}


def cfg(**raw) -> SweepConfig:
    """``sweep.yaml`` with :data:`SPACE` and ``raw``'s other keys, validated."""
    return sweep_from_dict({"space": SPACE, **raw}, PARAMS)
