"""`birnn sweep` for real: an Optuna study in the team stack's PostgreSQL, two worker
processes, each trial a DVC experiment of tiny real-MNIST runs and a child MLflow run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from birnn.stack import Stack
from birnn.tracking import was_evaluated
from tests.helpers.pipeline import commit_all, dvc, team_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPACE = {
    "study": "tiny",
    "seed": 3,
    "heartbeat_s": 2,
    "fixed": {"preprocess.train_samples": 300, "train.epochs": 1},
    "space": {
        "train.learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
        "model.cell": ["lstm", "gru"],
        "model.units": {"low": 16, "high": 32, "step": 16},  # one width for every layer
    },
}


def sweep_project(stack: Stack, dest: Path, mnist_dir: Path, study: str, trials: int):
    repo, env = team_project(stack, dest, mnist_dir, tracking__experiment_name=study)
    (repo / "sweep.yaml").write_text(yaml.safe_dump({**SPACE, "study": study, "trials": trials}))
    commit_all(repo, env, "sweep.yaml")
    return repo, {**env, "BIRNN_SWEEP_STORAGE": stack.backend_uri("optuna")}


def start_sweep(repo: Path, env: dict, workers: int, own_group: bool = False) -> subprocess.Popen:
    """``birnn sweep`` in the background; ``own_group``: in its own process group, as a
    terminal's foreground job is (so Ctrl-C can be sent to that group alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "birnn.sweep", "--workers", str(workers)],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=own_group,
    )  # fmt: skip


def command_line(p: psutil.Process) -> str:
    """A process's command line; "" for one that ended meanwhile (a zombie has none)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def trials_of(stack: Stack, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=stack.backend_uri("optuna")).trials


def exp_names(repo: Path, env: dict) -> set[str]:
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo, env=env))
    return {e["name"] for rev in shown for e in (rev.get("experiments") or []) if e.get("name")}


def children(stack: Stack, client: MlflowClient, study: str) -> tuple[str, list]:
    """The study's parent MLflow run id and the runs nested under it."""
    exp = client.get_experiment_by_name(study)
    stored = optuna.load_study(study_name=study, storage=stack.backend_uri("optuna"))
    parent = stored.user_attrs["mlflow_parent_run_id"]
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return parent, runs


def test_two_workers_run_four_trials_as_experiments_and_child_runs(
    stack: Stack, tmp_path: Path, mnist_dir: Path
) -> None:
    repo, env = sweep_project(stack, tmp_path / "repo", mnist_dir, "tiny4", trials=4)
    t0 = time.monotonic()
    proc = start_sweep(repo, env, workers=2)
    out = proc.communicate(timeout=1200)[0]
    assert proc.returncode == 0, out[-4000:]
    print(f"4 trials, 2 workers: {time.monotonic() - t0:.0f}s")

    trials = trials_of(stack, "tiny4")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Never more than asked: a worker that asked for the last trial at the moment the other
    # did gives way (its trial closed FAIL as surplus, never run).
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert len(complete) == 4 and len(trials) == 4 + len(surplus)
    assert all(t.state == optuna.trial.TrialState.FAIL and "dvc_exp" not in t.user_attrs
               for t in surplus)  # fmt: skip
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 4
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both workers ran trials

    names = {t.user_attrs["dvc_exp"] for t in complete}
    assert names <= exp_names(repo, env)

    client = MlflowClient(stack.mlflow_uri())
    parent, runs = children(stack, client, "tiny4")
    assert len(runs) == 4
    assert {r.data.tags["dvc.exp_name"] for r in runs} == names
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"val_accuracy", "test_accuracy"} <= set(run.data.metrics)
    best = max(complete, key=lambda t: t.value)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["sweep.best_dvc_exp"] == best.user_attrs["dvc_exp"]
    assert parent_run.data.metrics["best_val_accuracy"] == pytest.approx(best.value)
    figures = {a.path for a in client.list_artifacts(parent, "figures")}
    assert figures == {"figures/optimization_history.png", "figures/param_importances.png"}
    assert f"dvc exp apply {best.user_attrs['dvc_exp']}" in out

    # The best trial comes back into the workspace.
    dvc("exp", "apply", best.user_attrs["dvc_exp"], cwd=repo, env=env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["model"]["cell"] == best.params["model.cell"]
    assert params["train"]["learning_rate"] == pytest.approx(best.params["train.learning_rate"])


def test_a_worker_killed_mid_trial_is_retried_and_the_study_completes(
    stack: Stack, tmp_path: Path, mnist_dir: Path
) -> None:
    repo, env = sweep_project(stack, tmp_path / "repo", mnist_dir, "tiny-kill", trials=2)
    client = MlflowClient(stack.mlflow_uri())
    proc = start_sweep(repo, env, workers=2)
    # Kill one worker (and its pipeline) once its trial's MLflow run exists.
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
        exp = client.get_experiment_by_name("tiny-kill")
        query = "attributes.status = 'RUNNING' and tags.`sweep.trial` LIKE 'tiny-kill:%'"
        running = client.search_runs([exp.experiment_id], query) if exp else []
        if running:
            number = int(running[0].data.tags["sweep.trial"].split(":")[1])
            worker = next(t.user_attrs["worker"] for t in trials_of(stack, "tiny-kill")
                          if t.number == number)  # fmt: skip
            victim = next(p for p in psutil.Process(proc.pid).children()
                          if worker in command_line(p))  # fmt: skip
            # The study's URL holds PostgreSQL's password: workers get it by environment.
            lines = [command_line(p) for p in psutil.Process(proc.pid).children(True)]
            assert not [ln for ln in lines if stack.state().pg_password in ln]
            killed_run = running[0].info.run_id
        time.sleep(0.5)
    for p in [*victim.children(recursive=True), victim]:
        p.kill()
    out = proc.communicate(timeout=1200)[0]
    assert proc.returncode == 0, out[-4000:]

    trials = trials_of(stack, "tiny-kill")
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    failed = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert failed.number == number
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == failed.params
    complete_names = {t.user_attrs["dvc_exp"] for t in trials
                      if t.state == optuna.trial.TrialState.COMPLETE}  # fmt: skip
    assert len(complete_names) == 2 and complete_names <= exp_names(repo, env)
    assert client.get_run(killed_run).info.status == "KILLED"
    _, runs = children(stack, client, "tiny-kill")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 2 + ["KILLED"]


@pytest.mark.parametrize("how", ["sigterm-to-main", "ctrl-c-to-group"])
def test_sigterm_stops_every_worker_and_trial(
    stack: Stack, tmp_path: Path, mnist_dir: Path, how: str
) -> None:
    # SIGTERM to the sweep's main process only (what `timeout` and a CI cancel send): before,
    # it exited at once and both workers ran on. Ctrl-C (SIGINT to the terminal's process
    # group): before, a worker died in `git fetch`, the other took its stopped trial for a
    # failed one and went on, and the sweep ran to its end (as it still did where the sweep
    # was started with SIGINT ignored, as under CI's background shells, until it installed
    # its own handler). Now every worker, its dvc and its stage end within ~15 s; the stopped
    # trials are FAIL, their runs and the parent KILLED.
    study = f"tiny-{how[:6]}"
    repo, env = sweep_project(stack, tmp_path / "repo", mnist_dir, study, trials=2)
    longer = {**SPACE, "study": study, "trials": 2,
              "fixed": {"preprocess.train_samples": 2000, "train.epochs": 4}}  # fmt: skip
    (repo / "sweep.yaml").write_text(yaml.safe_dump(longer))
    commit_all(repo, env, "longer trials")
    client = MlflowClient(stack.mlflow_uri())
    proc = start_sweep(repo, env, workers=2, own_group=how == "ctrl-c-to-group")
    deadline = time.monotonic() + 600
    query = f"attributes.status = 'RUNNING' and tags.`sweep.trial` LIKE '{study}:%'"
    while True:  # until a trial is training
        assert proc.poll() is None and time.monotonic() < deadline, "no trial started"
        exp = client.get_experiment_by_name(study)
        if exp and client.search_runs([exp.experiment_id], query):
            break
        time.sleep(0.5)
    family = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    # A trial runs in its own process group: count its members too.
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) in family:
                family.add(p.pid)
    t0 = time.monotonic()
    if how == "ctrl-c-to-group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    took = time.monotonic() - t0

    def running(pid: int) -> bool:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        return False

    alive = [pid for pid in family if running(pid)]
    assert proc.returncode != 0, out[-3000:]
    assert took < 20 and alive == [], (took, alive, out[-3000:])
    trials = trials_of(stack, study)
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.FAIL in states, out[-3000:]
    assert optuna.trial.TrialState.RUNNING not in states, out[-3000:]
    failed = {f"{study}:{t.number}" for t in trials if t.state == optuna.trial.TrialState.FAIL}
    parent, runs = children(stack, client, study)
    assert client.get_run(parent).info.status == "KILLED"

    # A stopped trial's runs are KILLED, a train-only one too (train leaves it FINISHED for
    # evaluate); only a whole run (its evaluate ended before the stop, its trial not yet told)
    # stays FINISHED, tagged not counted.
    def stopped_as_documented(r) -> bool:
        whole = (r.info.status, r.data.tags.get("sweep.counted")) == ("FINISHED", "false")
        return r.info.status == "KILLED" or (whole and was_evaluated(r))

    stopped = [r for r in runs if r.data.tags["sweep.trial"] in failed]
    assert all(stopped_as_documented(r) for r in stopped), [
        (r.info.status, r.data.tags.get("sweep.counted"), sorted(r.data.metrics)) for r in stopped
    ]
    assert not [r for r in runs if r.info.status == "RUNNING"], out[-3000:]


@pytest.mark.parametrize("point", ["sweep.asked", "sweep.ran"])
def test_a_worker_crashed_around_its_trial_counts_it_once(
    stack: Stack, tmp_path: Path, mnist_dir: Path, point: str
) -> None:
    # Kill points of the sweep: after a trial is asked (nothing ran) and after its experiment
    # ran, before the study is told. The rerun fails the stale trial, retries it once with the
    # same params, and the study ends with exactly the one trial asked for.
    study = f"tiny-{point.split('.')[1]}"
    repo, env = sweep_project(stack, tmp_path / "repo", mnist_dir, study, trials=1)
    crashed = start_sweep(repo, {**env, "BIRNN_CRASH_AT": point}, workers=1)
    out = crashed.communicate(timeout=900)[0]
    assert crashed.returncode == 1 and "workers exited [86]" in out, out[-3000:]
    (lost,) = trials_of(stack, study)
    assert lost.state == optuna.trial.TrialState.RUNNING  # never told: the crash came first

    rerun = start_sweep(repo, env, workers=1)
    out = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, out[-3000:]
    trials = trials_of(stack, study)
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
    assert trials[1].system_attrs.get("failed_trial") == lost.number
    assert trials[1].params == lost.params
    client = MlflowClient(stack.mlflow_uri())
    parent, runs = children(stack, client, study)
    crashed = [r for r in runs if r.data.tags["sweep.trial"] == f"{study}:{lost.number}"]
    # Only a trial that ran has a run: whole (FINISHED) and tagged as not counted. The retry's
    # stages come from DVC's run cache when the crashed run finished them, so it may have no
    # run of its own.
    if point == "sweep.ran":
        assert [(r.info.status, r.data.tags.get("sweep.counted")) for r in crashed] == [
            ("FINISHED", "false")
        ]
    else:
        assert crashed == []
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.metrics["best_val_accuracy"] == pytest.approx(
        trials[1].value
    )
