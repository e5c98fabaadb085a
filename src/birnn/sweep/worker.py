"""One sweep worker: its own git checkout of HEAD sharing this repo's DVC cache, trials asked
from the study and run as ``dvc exp run``, their experiments fetched back here.

A failed trial (:class:`TrialFailed`) is told to the study as FAIL and the worker goes on; a
worker stops with one line after more failures than the study wants trials. Ctrl-C marks
the running trial failed before the worker exits.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from birnn import crash
from birnn.errors import BirnnError
from birnn.sweep.space import SWEEP_DIR, SweepConfig, broadcast, set_args, suggest, trial_exp_name
from birnn.sweep.storage import heartbeat, open_storage

log = logging.getLogger("birnn.sweep")


class TrialFailed(BirnnError):
    """A trial's pipeline run failed; the study goes on."""


class TrialAbandoned(BirnnError):
    """A trial stopped because its heartbeat could not be recorded: another worker retries it."""


def objective_value(history_csv: Path, metric: str, best_restored: bool) -> float:
    """The trained model's validation score: the last epoch's, or with early stopping (which
    restores the best weights) that of the epoch with the lowest val_loss."""
    with history_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows or metric not in rows[0]:
        raise TrialFailed(f"{history_csv} has no {metric} column")
    row = min(rows, key=lambda r: float(r["val_loss"])) if best_restored else rows[-1]
    value = float(row[metric])
    if not math.isfinite(value):
        raise TrialFailed(f"{metric} is {value}")
    return value


def git(*args: str, cwd: Path) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BirnnError(f"git {' '.join(args)} failed in {cwd}: {res.stderr.strip()[:300]}")
    return res.stdout.strip()


def check_committed(root: Path) -> str:
    """Trials start from HEAD in their own checkouts: the pipeline must be committed."""
    dirty = git("status", "--porcelain", "--", "params.yaml", "dvc.yaml", "src", cwd=root)
    if dirty:
        first = dirty.splitlines()[0][3:]
        raise BirnnError(
            f"uncommitted changes ({first} ...): trials run from HEAD in their own checkouts; "
            "commit them first"
        )
    return git("rev-parse", "HEAD", cwd=root)


def prepare_checkout(root: Path, dest: Path, head: str) -> Path:
    """A worker's own checkout of ``head`` that uses this repo's DVC cache (shared, so a
    stage cached by any trial is restored, not re-run, by every other)."""
    if not (dest / ".git").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", "--no-checkout", str(root), str(dest), cwd=root)
    git("fetch", "-q", str(root), head, cwd=dest)
    git("checkout", "-q", "--force", "--detach", head, cwd=dest)
    # A worker killed mid-trial leaves DVC's lock files behind; the checkout is this worker's.
    for stale in ("lock", "rwlock"):
        (dest / ".dvc" / "tmp" / stale).unlink(missing_ok=True)
    cache = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Outputs are links into the shared cache, not copies (DVC unlinks one before a stage
    # rewrites it), so a checkout costs no more disk than its code.
    for args in (["cache", "dir", "--local", cache], ["config", "--local", "cache.type",
                 "hardlink,symlink,copy"]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=dest, capture_output=True,
                       text=True, check=True)  # fmt: skip
    return dest


def run_trial(
    cfg: SweepConfig,
    checkout: Path,
    overrides: Mapping[str, Any],
    name: str,
    env: Mapping[str, str],
    lost: threading.Event | None = None,
) -> float:
    """``dvc exp run`` of one trial in the worker's checkout; its objective value."""
    git("checkout", "-q", "--force", "--", "params.yaml", cwd=checkout)
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "-n", name, *set_args(overrides)]
    log.info("trial %s: %s", name, " ".join(cmd[3:]))
    with (checkout / f".{name}.log").open("w") as out:
        # Its own process group: on Ctrl-C or SIGTERM this worker stops the whole trial (dvc
        # and the stage it runs), not dvc alone, and not before it has told the study.
        proc = subprocess.Popen(
            cmd, cwd=checkout, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            returncode = wait_unless(proc, lost)
        except TrialAbandoned:
            stop_group(proc, TRIAL_STOP_S)
            raise
        except KeyboardInterrupt:
            ignore_stop_signals()  # Ctrl-C and the sweep's SIGTERM may both come: stop once
            stop_group(proc, TRIAL_STOP_S)
            raise
    if returncode != 0:
        lines = (checkout / f".{name}.log").read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in lines if ": error:" in ln or ln.startswith("ERROR")]
        raise TrialFailed(f"dvc exp run exited {returncode}: {(errors or lines or [''])[-1]}")
    try:
        params = yaml.safe_load((checkout / "params.yaml").read_text())
        restored = params["train"].get("early_stopping_patience") is not None
        history = checkout / "reports/history.csv"
        return objective_value(history, cfg.metric, restored)
    except (OSError, ValueError, KeyError) as exc:
        raise TrialFailed(f"no {cfg.metric} from the run: {exc}") from None


def wait_unless(proc: subprocess.Popen, lost: threading.Event | None) -> int:
    """``proc``'s exit code, or :class:`TrialAbandoned` as soon as ``lost`` is set."""
    while True:
        try:
            return proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            if lost is not None and lost.is_set():
                raise TrialAbandoned("its heartbeat could not be recorded") from None


def surplus(study: Any, trial: Any, wanted: int) -> bool:
    """Whether ``trial`` is one more than the study wants. Two workers can count
    ``wanted - 1`` trials at once and both ask; the storage numbers trials atomically, so the
    one whose lower-numbered trials already make ``wanted`` (complete or running) gives way."""
    import optuna

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    before = [
        t for t in study.get_trials(deepcopy=False, states=counted) if t.number < trial.number
    ]
    return len(before) >= wanted


def tell_complete(study: Any, trial: Any, value: float) -> bool:
    """Tell ``trial`` complete with ``value``; False (one line, no traceback) when another
    worker had already failed it as stale (its heartbeat stalled): that trial keeps its state,
    and its retry counts instead of this run."""
    import optuna

    told = study.tell(trial, value, skip_if_finished=True)
    if told.state == optuna.trial.TrialState.COMPLETE:
        return True
    log.warning("trial %d was failed by another worker meanwhile: its result is not counted "
                "(its retry is)", trial.number)  # fmt: skip
    return False


# How long a stopped trial's processes get to end on SIGTERM before SIGKILL.
TRIAL_STOP_S = 8


def ignore_stop_signals() -> None:
    """While a stopped worker cleans up, a second Ctrl-C or SIGTERM must not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to the process group ``proc`` leads, SIGKILL after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def fetch_experiment(root: Path, checkout: Path) -> None:
    """Bring the checkout's experiment refs here (one fetch at a time: git locks refs)."""
    from filelock import FileLock

    with FileLock(str(root / SWEEP_DIR / "git-fetch.lock")):
        git("fetch", "-q", str(checkout), "+refs/exps/*:refs/exps/*", cwd=root)


def worker(cfg: SweepConfig, url: str, worker_id: str, root: Path) -> int:
    """Ask for trials and run them until the study has ``cfg.trials`` complete ones."""
    import optuna

    from birnn.sweep import tracking

    head = check_committed(root)
    storage = open_storage(url, cfg.heartbeat_s, on_stale=tracking.mark_trial_runs_killed)
    study = optuna.load_study(
        study_name=cfg.study,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=_worker_seed(cfg, worker_id)),
    )
    checkout = prepare_checkout(
        root, root / SWEEP_DIR / "workers" / f"{cfg.study}-{worker_id}", head
    )
    parent = study.user_attrs.get("mlflow_parent_run_id", "")
    raw_params = yaml.safe_load((checkout / "params.yaml").read_text())
    done = 0
    failures = 0
    last_error = name = ""
    while True:
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        running = states.count(optuna.trial.TrialState.RUNNING)
        waiting = states.count(optuna.trial.TrialState.WAITING)
        if complete >= cfg.trials:
            break
        if complete + running >= cfg.trials and not waiting:
            time.sleep(cfg.heartbeat_s)  # the last trials are running elsewhere; stay to retry
            continue
        if failures > cfg.trials:
            raise BirnnError(
                f"worker {worker_id} stops after {failures} failed trials; the last: {last_error} "
                f"(its log: {checkout / ('.' + name + '.log')})"
            )
        trial = study.ask()
        # A heartbeat at once: a worker killed before its trial starts leaves a trial the
        # others can see is stale, never one RUNNING forever.
        storage.record_heartbeat(trial._trial_id)
        if surplus(study, trial, cfg.trials):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.info("trial %d not run: the study has its %d trials", trial.number, cfg.trials)
            continue
        try:
            values = {**cfg.fixed, **{d.key: suggest(trial, d) for d in cfg.space}}
            name = trial_exp_name(cfg.study, trial.number)
            trial.set_user_attr("dvc_exp", name)
            trial.set_user_attr("worker", worker_id)
        except KeyboardInterrupt:
            ignore_stop_signals()
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        overrides = broadcast(raw_params, values)
        env = {
            # The stages run with this environment's Python and the checkout's own code.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(checkout / "src"),
            "BIRNN_SWEEP_PARENT_RUN_ID": parent,
            "BIRNN_SWEEP_TRIAL": f"{cfg.study}:{trial.number}",
            "BIRNN_REGISTRY": os.environ.get("BIRNN_SWEEP_REGISTRY", "off"),
        }
        crash.point("sweep.asked")
        try:
            # The fetch too: it waits its turn on a lock, and a trial with no heartbeat
            # meanwhile would be failed as stale by the other workers.
            with heartbeat(storage, trial._trial_id, cfg.heartbeat_s) as lost:
                value = run_trial(cfg, checkout, overrides, name, env, lost)
                fetch_experiment(root, checkout)
        except TrialAbandoned as exc:
            # Not told: the storage could not be written, and the study's other workers fail
            # and retry the stale trial; telling it now could race their retry.
            log.warning("trial %d stopped: %s; another worker retries it", trial.number, exc)
            last_error = str(exc)
            failures += 1
            continue
        except TrialFailed as exc:
            log.warning("trial %d failed: %s", trial.number, exc)
            last_error = str(exc)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
            continue
        except KeyboardInterrupt:
            # Stopped by the user or the sweep: the trial failed, its runs were killed.
            ignore_stop_signals()
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            try:
                tracking.mark_trial_runs_killed(study, trial)
            except Exception as exc:  # the store may be what is going away
                log.warning("trial %d's MLflow runs not marked KILLED: %s", trial.number, exc)
            raise
        crash.point("sweep.ran")
        if not tell_complete(study, trial, value):
            continue
        done += 1
        log.info("trial %d (%s): %s = %.4f", trial.number, name, cfg.metric, value)
    return done


def _worker_seed(cfg: SweepConfig, worker_id: str) -> int:
    """Each worker's sampler gets its own seed, derived from the study's and its id."""
    return (cfg.seed * 1_000_003 + zlib.crc32(worker_id.encode())) % 2**32
