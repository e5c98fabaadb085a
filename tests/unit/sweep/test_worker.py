"""A trial's objective (the saved model's validation score from history.csv), never more
trials than asked, and a trial whose heartbeat is lost stops."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest

from birnn.sweep.worker import (
    TrialAbandoned,
    objective_value,
    stop_group,
    surplus,
    tell_complete,
    wait_unless,
)


def test_objective_is_the_saved_models_validation_score(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n"
        "1,0.9,0.7,0.30,0.91\n"
        "2,0.5,0.8,0.20,0.95\n"
        "3,0.4,0.9,0.25,0.94\n"
    )
    assert objective_value(history, "val_accuracy", best_restored=False) == 0.94
    # Early stopping restores the weights of the lowest val_loss: epoch 2.
    assert objective_value(history, "val_accuracy", best_restored=True) == 0.95
    assert objective_value(history, "val_loss", best_restored=False) == 0.25


def test_of_two_workers_asking_at_once_for_the_last_trial_the_later_one_gives_way() -> None:
    # Both counted 1 of 2 trials and asked: trial numbers decide, so exactly 2 run.
    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 0.5)
    first, second = study.ask(), study.ask()
    assert not surplus(study, first, wanted=2)
    assert surplus(study, second, wanted=2)
    study.tell(second, state=optuna.trial.TrialState.FAIL)  # what the worker does with it
    # A failed trial does not count: its retry (asked later) is not surplus.
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    retry = study.ask()
    assert not surplus(study, retry, wanted=2)


def test_a_trial_whose_heartbeat_is_lost_is_stopped_not_waited_for() -> None:
    lost = threading.Event()
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    threading.Timer(0.5, lost.set).start()
    t0 = time.monotonic()
    with pytest.raises(TrialAbandoned):
        wait_unless(proc, lost)
    assert time.monotonic() - t0 < 3
    stop_group(proc, timeout=5)
    assert proc.returncode == -signal.SIGTERM
    assert wait_unless(subprocess.Popen(["true"]), lost=None) == 0


def test_a_result_for_a_trial_another_worker_failed_is_not_counted() -> None:
    # Before, telling it raised "Cannot tell a FAIL trial" and the worker died with a traceback.
    study = optuna.create_study()
    stale, fresh = study.ask(), study.ask()
    study.tell(stale, state=optuna.trial.TrialState.FAIL)  # what the other worker did
    assert not tell_complete(study, stale, 0.9)
    assert tell_complete(study, fresh, 0.8)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
