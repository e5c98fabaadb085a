"""What `birnn sweep` prints at the end: the commands that bring back the best trial."""

from __future__ import annotations

import optuna

from birnn.sweep.cli import best_commands
from birnn.sweep.space import suggest
from tests.helpers.sweep import PARAMS, cfg


def test_best_commands_reproduce_the_best_trial() -> None:
    c = cfg(fixed={"train.epochs": 2})
    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.95):
        trial = study.ask()
        for dim in c.space:
            suggest(trial, dim)
        trial.set_user_attr("dvc_exp", f"sweep-t00{trial.number}")
        study.tell(trial, value)
    apply_line, run_line = best_commands(c, study, PARAMS)
    assert apply_line == f"dvc exp apply sweep-t00{study.best_trial.number}"
    assert run_line.startswith("dvc exp run -S 'train.epochs=2' -S 'train.learning_rate=")
    units = study.best_trial.params["model.units"]
    assert f"-S 'model.units=[{units}, {units}]'" in run_line  # as params.yaml takes it
