"""A resumed study searches what it was started with, or stops with one line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from birnn.errors import ConfigError
from birnn.sweep.storage import check_same_search
from tests.helpers.sweep import cfg


def test_a_resumed_study_with_another_search_is_refused_in_one_line() -> None:
    study = optuna.create_study(direction="maximize")
    started = cfg(fixed={"train.epochs": 2})
    check_same_search(study, started, Path("sweep.yaml"))  # a new study adopts its search
    check_same_search(study, cfg(fixed={"train.epochs": 2}, trials=40), Path("sweep.yaml"))
    for changed in (
        cfg(fixed={"train.epochs": 3}),
        cfg(fixed={"train.epochs": 2}, objective={"metric": "val_loss"}),
        cfg(fixed={"train.epochs": 2}, space={"train.batch_size": [64, 256]}),
    ):
        with pytest.raises(ConfigError, match=r"^study 'sweep' was started with another"):
            check_same_search(study, changed, Path("sweep.yaml"))
