"""The sweep's parent MLflow run, which groups a study's trials in the UI's tree: created
RUNNING with the search space, finished with the best trial, counts and Optuna's figures,
KILLED when the sweep is interrupted; and the runs of a trial that was stopped or whose worker
died: KILLED if they were running or only trained (never evaluated), tagged
``sweep.counted=false`` if they were whole.

Every call goes through :mod:`birnn.tracking`'s retrying MLflow wrapper, so a
store that is briefly busy is retried and one that is gone is a :class:`TrackingError`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from birnn import store
from birnn.tracking import _mlflow, connect, lineage_tags, param_value, was_evaluated

log = logging.getLogger("birnn.sweep")


def start_sweep_run(cfg: Any, storage: str) -> str:
    """Create the sweep's parent run (not left active): the search space, objective and study."""
    from birnn.config import load_params

    connect(load_params())
    with _mlflow.start_run(run_name=f"sweep-{cfg.study}") as run:
        _mlflow.log_params(
            {
                "sweep.study": cfg.study,
                "sweep.trials": cfg.trials,
                "sweep.seed": cfg.seed,
                "sweep.objective": f"{cfg.direction} {cfg.metric}",
                **{f"sweep.fixed.{k}": param_value(v) for k, v in cfg.fixed.items()},
                **{f"sweep.space.{d.key}": _dimension_text(d) for d in cfg.space},
            }
        )
        _mlflow.set_tags({**lineage_tags(), "sweep.study": cfg.study, "sweep.storage": storage})
        _mlflow.log_dict(
            {"space": {d.key: _dimension_text(d) for d in cfg.space}, "fixed": dict(cfg.fixed)},
            "sweep/space.yaml",
        )
    # Left RUNNING until the study is done: the UI shows the sweep as in progress.
    end_sweep_run(run.info.run_id, "RUNNING")
    return run.info.run_id


def _dimension_text(dim: Any) -> str:
    if dim.kind == "choice":
        return f"choice {list(dim.choices)}"
    scale = " log" if dim.log else ""
    step = f" step {dim.step}" if dim.step else ""
    return f"{dim.kind} [{dim.low}, {dim.high}]{scale}{step}"


def finish_sweep_run(parent_run_id: str, study: Any, cfg: Any) -> None:
    """The study's outcome on the parent run: best trial, counts, Optuna's figures."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as oplt

    from birnn.config import load_params

    connect(load_params())
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    complete = counts.get("complete", 0)
    with _mlflow.start_run(run_id=parent_run_id):
        _mlflow.log_metrics({f"trials_{k}": float(v) for k, v in counts.items() if v})
        if complete:
            best = study.best_trial
            _mlflow.log_metric(f"best_{cfg.metric}", float(best.value))
            _mlflow.set_tags(
                {
                    "sweep.best_trial": str(best.number),
                    "sweep.best_dvc_exp": best.user_attrs.get("dvc_exp", ""),
                }
            )
            _mlflow.log_dict(
                {"number": best.number, "value": best.value, "params": best.params},
                "sweep/best_trial.json",
            )
        # Optuna's own figures: the optimisation history and (from 2 trials) importances.
        plots = {"optimization_history.png": oplt.plot_optimization_history}
        if complete >= 2:
            plots["param_importances.png"] = oplt.plot_param_importances
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            for name, plot in plots.items():
                try:
                    ax = plot(study)
                except (ValueError, RuntimeError) as exc:
                    log.warning("sweep figure %s not drawn: %s", name, exc)
                    continue
                ax.figure.set_size_inches(8, 5)
                ax.figure.tight_layout()
                ax.figure.savefig(Path(tmp) / name, dpi=100)
                plt.close(ax.figure)
            _mlflow.log_artifacts(tmp, "figures")
    end_sweep_run(parent_run_id, "FINISHED" if complete >= cfg.trials else "KILLED")


def end_sweep_run(run_id: str, status: str) -> None:
    """Set the parent run's status (RUNNING while the study runs, then FINISHED or KILLED)."""
    store.retrying(MlflowClient().set_terminated)(run_id, status)


def mark_trial_runs_killed(study: Any, trial: Any) -> None:
    """A trial that was stopped or whose worker died: its runs that still say RUNNING are
    marked KILLED, as MLflow does for a run stopped by Ctrl-C. So is one that FINISHED its
    training but has no test metrics: train ends the pipeline's run and evaluate reopens it,
    and a stop between the two stages (several seconds of dvc and imports) left a run that
    looked whole. One that was evaluated too (the worker died after its experiment ran, before
    it told the study: kill point ``sweep.ran``) is whole and stays FINISHED, tagged
    ``sweep.counted=false``: the study did not count it, its retry (whose stages DVC's run
    cache may restore from this run) counts instead."""
    client = MlflowClient()
    tag = f"{study.study_name}:{trial.number}"
    runs = store.retrying(client.search_runs)(
        [exp.experiment_id for exp in client.search_experiments()],
        filter_string=f"tags.`sweep.trial` = '{tag}'",
    )
    for run in runs:
        if run.info.status == "RUNNING" or (
            run.info.status == "FINISHED" and not was_evaluated(run)
        ):
            store.retrying(client.set_terminated)(run.info.run_id, "KILLED")
            log.warning("MLflow run %s of trial %s marked KILLED", run.info.run_id, tag)
        elif run.info.status == "FINISHED":
            store.retrying(client.set_tag)(run.info.run_id, "sweep.counted", "false")
            log.warning("MLflow run %s of trial %s finished but was not counted: tagged "
                        "sweep.counted=false", run.info.run_id, tag)  # fmt: skip
