"""Every MLflow call of the project lives here; stages call these functions.

One pipeline execution is one MLflow run: train opens it (params, tags, per-epoch metrics),
records its id in ``reports/train.json``, and evaluate reopens it to add test metrics, figures
and the model, then registers the model and moves the ``champion`` alias when it is better.

With ``MLFLOW_TRACKING_URI`` unset, runs go to ``mlflow.db`` (sqlite) in the project root, and
artifacts to ``mlruns/`` beside it, also from queued and ``--temp`` DVC experiments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import requests
import yaml
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient

from birnn.config import Params, flatten
from birnn.errors import TrackingError

log = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_NAME_IN_RUN = "model"


def project_root() -> Path:
    """The DVC project's root: DVC sets ``DVC_ROOT`` for stages, and for queued and ``--temp``
    experiments points it at the parent project, not the temp copy they run in."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def default_uri() -> str:
    """``sqlite:///<project>/mlflow.db``: absolute, so experiments run elsewhere log here too."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` or the project's sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def experiment_name(params: Params) -> str:
    """``MLFLOW_EXPERIMENT_NAME`` overrides ``tracking.experiment_name``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or params.tracking.experiment_name


def connect(params: Params) -> MlflowClient:
    """Point MLflow at the store and experiment; fail fast with one line if it is unusable."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        # MLflow's own client retries for minutes; a quick health probe fails fast instead.
        try:
            resp = requests.get(uri.rstrip("/") + "/health", timeout=5)
            resp.raise_for_status()
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                "(see README, 'Team use') or unset MLFLOW_TRACKING_URI to log to ./mlflow.db"
            ) from None
    mlflow.set_tracking_uri(uri)
    try:
        name = experiment_name(params)
        if uri == default_uri() and MlflowClient().get_experiment_by_name(name) is None:
            # Artifacts beside the store, whichever folder the first run started in.
            artifacts = (project_root() / "mlruns").as_uri()
            MlflowClient().create_experiment(name, artifact_location=artifacts)
        mlflow.set_experiment(name)
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {first}") from None
    return MlflowClient()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def dvc_lock_hashes(lock_path: Path = Path("dvc.lock")) -> dict[str, str]:
    """``dvc.<stage>.<out>.md5`` for every stage output recorded in ``dvc.lock``."""
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    tags = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            if "md5" in out:
                tags[f"dvc.{stage}.{out['path']}.md5"] = out["md5"]
    return tags


def lineage_tags(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Git commit, dirty flag, DVC hashes, experiment name, library versions, host."""
    import tensorflow as tf

    tags = {
        "git.commit": _git("rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "tensorflow.version": tf.__version__,
        "keras.version": keras.__version__,
        "host.cpu_count": str(os.cpu_count()),
        "host.platform": platform.platform(),
        **dvc_lock_hashes(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    # mlflow.source.git.commit makes the commit show in the UI's run header.
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    tags.update(extra or {})
    return tags


def run_exists(client: MlflowClient, run_id: str | None) -> bool:
    """Whether ``run_id`` names a run in the current store."""
    if not run_id:
        return False
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def default_run_name(params: Params) -> str:
    """``lstm-50x50-20261128-130310``: the network and the start time, readable in the UI."""
    units = "x".join(map(str, params.model.units))
    return f"{params.model.cell}-{units}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(
    params: Params,
    run_id: str | None = None,
    run_name: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Open (or reopen, given ``run_id``) the pipeline's run; log params and tags once."""
    if run_id:
        active = mlflow.start_run(run_id=run_id)
        log.info("MLflow: continuing run %s", run_id)
    else:
        # MLflow's random names come from `random`, which training seeds: name runs ourselves.
        name = run_name or os.environ.get("DVC_EXP_NAME") or default_run_name(params)
        active = mlflow.start_run(run_name=name)
        log.info("MLflow: started run %s in %s", active.info.run_id, tracking_uri())
        all_params = {**flatten(params), **(extra_params or {})}
        mlflow.log_params({k: _param_value(v) for k, v in all_params.items()})
    mlflow.set_tags(lineage_tags(tags))
    return active.info.run_id


def _param_value(value: Any) -> str:
    return "null" if value is None else str(value)


def end_run(status: str = "FINISHED") -> None:
    """Close the active run."""
    mlflow.end_run(status=status)


@contextlib.contextmanager
def closing_run() -> Iterator[None]:
    """End the active run FINISHED, or KILLED/FAILED when the block is interrupted or fails."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        end_run("KILLED")
        raise
    except BaseException:
        end_run("FAILED")
        raise
    end_run("FINISHED")


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log scalar metrics to the active run in one request."""
    client = MlflowClient()
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run")
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    client.log_batch(run.info.run_id, metrics=batch, synchronous=True)


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics (step = epoch number, 1-based) to the active MLflow run."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["epoch_time_s"] = time.perf_counter() - self._start
        log_metrics(metrics, step=epoch + 1)


def backfill_epochs(history: list[dict[str, float]]) -> None:
    """Log checkpointed epochs that the active run lacks (killed between save and log)."""
    run = mlflow.active_run()
    client = MlflowClient()
    logged = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    for row in history:
        step = int(row["epoch"])
        if step not in logged:
            log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=step)
            log.info("MLflow: back-filled epoch %d from the checkpoint", step)


def set_tags(tags: Mapping[str, str]) -> None:
    """Set tags on the active run."""
    mlflow.set_tags(dict(tags))


def log_artifacts(files: list[Path], artifact_path: str | None = None) -> None:
    """Attach existing files to the active run."""
    for f in files:
        if Path(f).is_file():
            mlflow.log_artifact(str(f), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    """Attach a text artifact to the active run."""
    mlflow.log_text(text, artifact_file)


def _save_keras_model(path: str, **kwargs: Any) -> None:
    # mlflow 3.17's keras flavour writes the input example before it creates the model folder
    # (FileNotFoundError); creating the folder first lets it keep the example.
    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


def log_keras_model(model: keras.Model, example: np.ndarray) -> str:
    """Log ``model`` (Keras flavour) with a signature and ``example`` as input example."""
    import tensorflow as tf

    signature = infer_signature(example, model.predict(example, verbose=0))
    info = Model.log(
        artifact_path=None,
        name=MODEL_NAME_IN_RUN,
        flavor=_KERAS_FLAVOR,
        model=model,
        signature=signature,
        input_example=example,
        # Pinned requirements: inferring them would load the model again in a subprocess.
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
    return info.model_uri


def register_and_promote(
    client: MlflowClient, model_uri: str, name: str, test_accuracy: float, run_id: str
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version; move ``champion`` to it only if it is better."""
    version = mlflow.register_model(model_uri, name).version
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    champ_acc = float(champ.tags["test_accuracy"]) if champ is not None else None
    promote = champ_acc is None or test_accuracy > champ_acc
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
        decision = "promoted" if champ is None else f"promoted over version {champ.version}"
    else:
        decision = f"kept version {champ.version} as champion"
    for key, value in {
        "test_accuracy": f"{test_accuracy:.6f}",
        "champion_test_accuracy_before": "none" if champ_acc is None else f"{champ_acc:.6f}",
        "champion_decision": decision,
        "run_id": run_id,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    mlflow.set_tags({"registry.version": str(version), "registry.decision": decision})
    log.info("registered %s version %s: %s", name, version, decision)
    return {"version": int(version), "promoted": promote, "decision": decision}
