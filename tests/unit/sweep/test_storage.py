"""A resumed study searches what it was started with, or stops with one line."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import optuna
import pytest

from birnn.errors import ConfigError
from birnn.sweep.storage import check_same_search, heartbeat, lost_after
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


def running_trial(tmp_path: Path) -> tuple[optuna.Study, int, sqlite3.Connection]:
    """A real sqlite study (heartbeat 1 s, grace 3 s) with one running trial, and a second
    connection that can lock the database as a long write by another process does."""
    db = tmp_path / "optuna.db"
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{db}",
        heartbeat_interval=1,
        grace_period=3,
        engine_kwargs={"connect_args": {"timeout": 0.2}},
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    holder = sqlite3.connect(db, isolation_level=None, timeout=5)
    return study, trial._trial_id, holder


def state(study: optuna.Study, trial_id: int) -> optuna.trial.TrialState:
    return study._storage.get_trial(trial_id).state


def test_a_heartbeat_that_fails_is_retried_and_the_trial_goes_on(tmp_path: Path, caplog) -> None:
    # Before, one storage error ended the heartbeat thread silently: the trial ran on unseen,
    # another worker failed it as stale and retried it, and its own tell raised.
    study, trial_id, holder = running_trial(tmp_path)
    with heartbeat(study._storage, trial_id, every_s=1) as lost:
        time.sleep(1.1)
        holder.execute("BEGIN EXCLUSIVE")  # nobody else can write for 1.5 s
        time.sleep(1.5)
        holder.execute("COMMIT")
        time.sleep(1.5)
        optuna.storages.fail_stale_trials(study)  # what the other workers run
        assert not lost.is_set()
    assert "trial heartbeat not recorded (OperationalError: " in caplog.text
    assert "trial heartbeat recorded again" in caplog.text
    assert state(study, trial_id) == optuna.trial.TrialState.RUNNING


def test_a_trial_whose_heartbeat_stays_unrecorded_is_told_to_stop_before_others_retry_it(
    tmp_path: Path,
) -> None:
    study, trial_id, holder = running_trial(tmp_path)
    with heartbeat(study._storage, trial_id, every_s=1) as lost:
        time.sleep(0.5)
        holder.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        assert lost.wait(timeout=10)
        stopped_after = time.monotonic() - t0
        holder.execute("COMMIT")
        # The runner stops here; the trial is not yet stale for the others ...
        optuna.storages.fail_stale_trials(study)
        assert state(study, trial_id) == optuna.trial.TrialState.RUNNING
        assert stopped_after < lost_after(1) + 1
        # ... and is once the grace period has passed: they fail it and retry it.
        time.sleep(3.5 - stopped_after)
        optuna.storages.fail_stale_trials(study)
        assert state(study, trial_id) == optuna.trial.TrialState.FAIL
