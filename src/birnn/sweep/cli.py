"""``birnn sweep``: an Optuna study over ``params.yaml``, every trial a DVC experiment and a
child MLflow run, run by any number of workers on this machine and others.

    birnn sweep [--config sweep.yaml] [--workers N] [--trials N] [--storage URL] [--study NAME]

The search space lives in ``sweep.yaml`` (validated strictly before anything starts). The
study is stored in Optuna's RDB storage: a sqlite file under ``.sweep/`` by default, or any
SQLAlchemy URL (the team PostgreSQL): the same command with the same study name and storage on
another machine joins the study. Rerunning it resumes the study.

Each worker runs trials in its own git checkout under ``.sweep/workers/`` that shares this
repository's DVC cache, so parallel trials never share a DVC workspace (DVC's repo lock); a
finished trial's experiment is fetched back here, where ``dvc exp show`` lists it and
``dvc exp apply`` restores it. Workers send Optuna heartbeats: a trial whose worker died is
marked failed by the others and retried once with the same params.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from birnn import stage
from birnn.errors import BirnnError, ConfigError
from birnn.sweep.space import SweepConfig, as_text, broadcast, load_sweep, set_args
from birnn.sweep.storage import check_same_search, open_storage, redact, storage_url
from birnn.sweep.worker import check_committed, ignore_stop_signals, worker

log = logging.getLogger("birnn.sweep")


def run_sweep(cfg: SweepConfig, url: str, workers: int, root: Path, config: Path) -> Any:
    """Create or resume the study and its parent MLflow run, run ``workers`` worker processes,
    then log the summary to the parent run; the study."""
    import optuna

    from birnn.sweep import tracking

    check_committed(root)
    storage = open_storage(url, cfg.heartbeat_s)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed)
    study = optuna.create_study(
        study_name=cfg.study,
        storage=storage,
        sampler=sampler,
        direction=cfg.direction,
        load_if_exists=True,
    )
    check_same_search(study, cfg, config)
    if "mlflow_parent_run_id" not in study.user_attrs:
        study.set_user_attr("mlflow_parent_run_id", tracking.start_sweep_run(cfg, redact(url)))
    parent = study.user_attrs["mlflow_parent_run_id"]
    log.info(
        "study %r in %s: %d trials wanted, MLflow parent run %s",
        cfg.study,
        redact(url),
        cfg.trials,
        parent,
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "birnn.sweep",
                "--worker",
                f"{socket.gethostname()}-{k}",
                "--study",
                cfg.study,
                "--trials",
                str(cfg.trials),
                "--config",
                str(config),
            ],
            cwd=root,
            # The storage URL may hold a password: by environment, never on a command line
            # (any local user's `ps` reads those).
            env={**os.environ, "BIRNN_SWEEP_STORAGE": url},
        )
        for k in range(workers)
    ]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group); SIGTERM (a CI cancel, `timeout`)
        # reached only this process: either way each worker is told, stops its trial and
        # tells the study, within WORKER_STOP_S, or is killed.
        ignore_stop_signals()
        stop_workers(procs)
        raise
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if complete < cfg.trials:
        tracking.finish_sweep_run(parent, study, cfg)
        raise BirnnError(
            f"{complete} of {cfg.trials} trials complete; workers exited {codes} (their errors "
            "are above); rerun the command to resume the study"
        )
    if any(codes):
        log.warning("workers exited %s, but the study has its %d trials", codes, cfg.trials)
    tracking.finish_sweep_run(parent, study, cfg)
    return study


# How long stopped workers get to mark their trials failed and exit before SIGKILL.
WORKER_STOP_S = 12


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """Workers that Ctrl-C reached stop by themselves; after a moment the others (SIGTERM
    came to this process alone) are told; any left at the deadline are killed."""
    deadline = time.monotonic() + WORKER_STOP_S
    grace = time.monotonic() + 2.0
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, grace - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _stop_parent_run(cfg: SweepConfig, url: str) -> str:
    """Ctrl-C: the sweep's parent run KILLED (a resumed sweep finishes it); what was done."""
    import optuna

    from birnn.sweep import tracking

    try:
        parent = optuna.load_study(study_name=cfg.study, storage=url).user_attrs.get(
            "mlflow_parent_run_id"
        )
        if parent:
            tracking.end_sweep_run(parent, "KILLED")
            return f", parent run {parent} marked KILLED"
    except Exception as exc:  # interrupted before the study or its run existed
        log.debug("no sweep run to stop: %s", exc)
    return ""


def best_commands(cfg: SweepConfig, study: Any, raw_params: Mapping[str, Any]) -> list[str]:
    """``dvc exp apply`` of the best trial, and the ``dvc exp run -S ...`` that reproduces it."""
    best = study.best_trial
    searched = {
        d.key: yaml.safe_load(best.params[d.key]) if as_text(d) else best.params[d.key]
        for d in cfg.space
    }
    overrides = {**cfg.fixed, **searched}
    args = set_args(broadcast(raw_params, overrides))
    sets = " ".join(f"'{a}'" if a != "-S" else a for a in args)
    return [f"dvc exp apply {best.user_attrs.get('dvc_exp', '?')}", f"dvc exp run {sets}"]


def _quiet() -> None:
    """Optuna flags its heartbeat API experimental, and ask() with heartbeats unusual: we
    record the heartbeats ourselves. TensorFlow's start-up lines are noise here too."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    """``birnn sweep`` (and, internally, one worker with ``--worker ID``)."""
    parser = argparse.ArgumentParser(prog="birnn sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sweep.yaml", help="the search (default sweep.yaml)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--trials", type=int, help="complete trials wanted (overrides the file)")
    parser.add_argument("--storage", help="study storage URL (default sqlite under .sweep/)")
    parser.add_argument("--study", help="study name (overrides the file)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # SIGTERM (`timeout`, a CI cancel) stops the sweep as Ctrl-C does, whichever way it was
    # started (`birnn sweep`, `python -m birnn.sweep`, a worker). Ctrl-C too, even where the
    # parent left SIGINT ignored (a script's background job, some CI runners): Python then
    # installs no KeyboardInterrupt of its own, and the sweep would run on to its end.
    signal.signal(signal.SIGTERM, stage._raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stage.setup_logging()
    _quiet()
    with stage.one_line_errors("birnn sweep"):
        config = Path(args.config)
        cfg = load_sweep(config)
        if args.trials is not None or args.study:
            if args.trials is not None and args.trials < 1:
                raise ConfigError("--trials must be at least 1")
            cfg = replace(cfg, trials=args.trials or cfg.trials, study=args.study or cfg.study)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        root = Path.cwd()
        url = storage_url(cfg, args.storage, root)
        if args.worker:
            # Workers log where the sweep does: this project's store unless one is set.
            from birnn import tracking

            os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.default_uri())
            try:
                worker(cfg, url, args.worker, root)
            except KeyboardInterrupt:
                log.warning("worker %s interrupted: its running trial is marked failed",
                            args.worker)  # fmt: skip
                sys.exit(130)
            return
        try:
            study = run_sweep(cfg, url, args.workers, root, config)
        except KeyboardInterrupt:
            log.warning("interrupted: running trials were stopped%s; rerun the same command to "
                        "resume the study", _stop_parent_run(cfg, url))  # fmt: skip
            sys.exit(130)
        best = study.best_trial
        log.info(
            "best trial %d: %s = %.4f with %s", best.number, cfg.metric, best.value, best.params
        )
        raw_params = yaml.safe_load(Path("params.yaml").read_text())
        for line in best_commands(cfg, study, raw_params):
            print(line)
