"""Every MLflow call of the project's runs lives here; stages call these functions.

One pipeline execution is one MLflow run: train opens it (params, tags, datasets, per-epoch
metrics), records its id in ``reports/train.json``, and evaluate reopens it to add test metrics,
figures and the model. When evaluate runs again on a model that was already evaluated (only
``evaluate.*`` changed, or ``dvc repro -f evaluate``), it starts a new run linked to the
training run instead, and leaves the earlier one untouched. The registry lives in
:mod:`birnn.registry`.

With ``MLFLOW_TRACKING_URI`` unset, runs go to ``mlflow.db`` (sqlite) in the project root, and
artifacts to ``mlruns/`` beside it, also from queued and ``--temp`` DVC experiments.

Why one module of ~450 lines: it is the one place a stage's MLflow calls can be, so a reader
checks them (and their retries) in one file; the sweep's parent run is in
:mod:`birnn.sweep.tracking` and the registry in :mod:`birnn.registry`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import requests
from mlflow.entities import LoggedModelStatus, Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from birnn import lineage, store
from birnn.config import Params, flatten
from birnn.errors import TrackingError

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"
# MLflow's fluent API, each call retried while a sqlite store is locked by another writer.
_mlflow = store.Retrying(mlflow)


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


# MLflow's HTTP client retries a dead server for minutes by default (measured: 532 s of stalled
# training). With these, one call gives up within ~30 s: 3 tries 1 s and 2 s apart when the
# server refuses connections, 8 s each when it hangs. Set any of them to override.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "8",
}


def connect(params: Params) -> MlflowClient:
    """Point MLflow at the store and experiment; fail fast with one line if it is unusable."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        # MLflow's own client retries for minutes; a quick health probe fails fast instead.
        try:
            resp = requests.get(uri.rstrip("/") + "/health", timeout=5)
            resp.raise_for_status()
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                "(docs/team-stack.md) or unset MLFLOW_TRACKING_URI to log to ./mlflow.db"
            ) from None
    mlflow.set_tracking_uri(uri)
    db = store.sqlite_path(uri)
    try:
        # The first use creates and migrates a sqlite store: one process at a time.
        with store.init_lock(db) if db else contextlib.nullcontext():
            if db is not None and store.leftovers_once_alone(db):
                store.repair(db, lambda: MlflowClient().search_experiments(max_results=1))
            _ensure_experiment(experiment_name(params), uri)
        _mlflow.set_experiment(experiment_name(params))
    except TrackingError:
        raise
    except ImportError as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} needs the Python package {exc.name!r}, which is not "
            "installed (a database driver, e.g. pip install psycopg2-binary for PostgreSQL)"
        ) from None
    except Exception as exc:  # MlflowException, SQLAlchemy, sqlite3, HTTP: the store's fault
        first = _first_line(exc)
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {first}") from None
    return store.Retrying(MlflowClient())


def _ensure_experiment(name: str, uri: str) -> None:
    """Create the experiment unless it exists; another process creating it first is fine."""
    client = store.Retrying(MlflowClient())
    if client.get_experiment_by_name(name) is not None:
        return
    # The project's sqlite store keeps artifacts beside it, whichever folder a run starts in.
    artifacts = (project_root() / "mlruns").as_uri() if uri == default_uri() else None
    try:
        client.create_experiment(name, artifact_location=artifacts)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def lineage_tags(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Git commit, dirty flag, experiment name, library versions, host."""
    import keras
    import tensorflow as tf

    dirty = lineage.uncommitted_changes()
    tags = {
        "git.commit": lineage.git("rev-parse", "HEAD") or "unknown",
        "git.dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
        "tensorflow.version": tf.__version__,
        "keras.version": keras.__version__,
        "host.cpu_count": str(os.cpu_count()),
        "host.platform": platform.platform(),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    # A sweep's trial (birnn sweep): a child of the sweep's parent run in the UI's tree.
    if os.environ.get("BIRNN_SWEEP_TRIAL"):
        tags["sweep.trial"] = os.environ["BIRNN_SWEEP_TRIAL"]
        if os.environ.get("BIRNN_SWEEP_PARENT_RUN_ID"):
            tags["mlflow.parentRunId"] = os.environ["BIRNN_SWEEP_PARENT_RUN_ID"]
    # mlflow.source.git.commit makes the commit show in the UI's run header.
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    tags.update(extra or {})
    return tags


@dataclass(frozen=True)
class RunState:
    """What the store says about a run id: can it be reopened, and was it evaluated."""

    usable: bool
    reason: str
    evaluated: bool = False
    run: Run | None = None


def run_state(client: MlflowClient, run_id: str | None, params: Params) -> RunState:
    """Whether ``run_id`` can be reopened in the current store and experiment.

    Only "not found" means absent; any other store error (403, 5xx, a broken database) is a
    :class:`TrackingError`, so lineage is never split silently.
    """
    if not run_id:
        return RunState(False, "no run id recorded")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return RunState(False, f"run {run_id} is not in {tracking_uri()}")
        raise TrackingError(
            f"MLflow could not look up run {run_id} in {tracking_uri()}: {_first_line(exc)}"
        ) from None
    if run.info.lifecycle_stage == "deleted":
        return RunState(False, f"run {run_id} was deleted", run=run)
    experiment = client.get_experiment_by_name(experiment_name(params))
    if experiment is None or run.info.experiment_id != experiment.experiment_id:
        return RunState(
            False,
            f"run {run_id} belongs to another experiment than {experiment_name(params)!r}",
            run=run,
        )
    return RunState(True, "", evaluated=was_evaluated(run), run=run)


def was_evaluated(run: Run) -> bool:
    """Whether evaluate has logged its test metrics to ``run`` (train's run is FINISHED
    between the two stages, so its status alone does not say)."""
    return "test_accuracy" in run.data.metrics


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
    params_first: bool = True,
) -> str:
    """Open (or reopen, given ``run_id``) the pipeline's run; log params and tags once.

    ``extra_params`` are logged beside ``params.yaml``'s; with ``params_first=False`` they are
    the base that ``params.yaml``'s values override.
    """
    if run_id:
        active = _mlflow.start_run(run_id=run_id)
        log.info("MLflow: continuing run %s", run_id)
    else:
        # MLflow's random names come from `random`, which training seeds: name runs ourselves.
        name = run_name or os.environ.get("DVC_EXP_NAME") or default_run_name(params)
        active = _mlflow.start_run(run_name=name)
        log.info("MLflow: started run %s in %s", active.info.run_id, tracking_uri())
        ours, extra = flatten(params), dict(extra_params or {})
        all_params = {**ours, **extra} if params_first else {**extra, **ours}
        _mlflow.log_params({k: param_value(v) for k, v in all_params.items()})
    _mlflow.set_tags(lineage_tags(tags))
    return active.info.run_id


def resume_or_start_run(
    client: MlflowClient,
    params: Params,
    run_id: str | None,
    history: list[dict[str, float]],
    extra_params: Mapping[str, Any],
) -> str:
    """Train's run: the checkpoint's run when it can be reopened, else a new one.

    A checkpoint whose run was deleted or lives in another experiment resumes its weights in a
    new run (its epochs are back-filled there), so a retry never fails the same way again.
    """
    if run_id:
        state = run_state(client, run_id, params)
        if not state.usable:
            log.warning("%s: the resumed training logs to a new run", state.reason)
            run_id = None
    run_id = start_run(params, run_id=run_id, extra_params=extra_params)
    if history:
        backfill_epochs(history)
    return run_id


def open_evaluation_run(
    client: MlflowClient, params: Params, train_run_id: str | None, model_sha: str
) -> str:
    """Evaluate's run: the training run if it was not evaluated yet, else a new linked run.

    The new run copies the training run's params (current params win) and is tagged with the
    training run's id; the training run itself is left untouched.
    """
    state = run_state(client, train_run_id, params)
    if state.usable and not state.evaluated:
        return start_run(params, run_id=train_run_id)
    why = "it was already evaluated" if state.usable else state.reason
    log.info("evaluating in a new run, linked to training run %s: %s", train_run_id, why)
    copied = dict(state.run.data.params) if state.run is not None else {}
    tags = {"model.sha256": model_sha, "birnn.train_run_id": str(train_run_id)}
    if state.run is not None:
        tags["mlflow.note.content"] = f"Evaluation of training run {train_run_id}."
    base = state.run.info.run_name if state.run is not None else f"model-{model_sha[:12]}"
    return start_run(
        params, run_name=f"{base}-eval", extra_params=copied, tags=tags, params_first=False
    )


def param_value(value: Any) -> str:
    return "null" if value is None else str(value)


def end_run(status: str = "FINISHED") -> None:
    """Close the active run."""
    _mlflow.end_run(status=status)


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
    client = store.Retrying(MlflowClient())
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run")
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    client.log_batch(run.info.run_id, metrics=batch, synchronous=True)


def epoch_logger() -> Any:
    """A Keras callback that logs each epoch's metrics (step = epoch number, 1-based) to the
    active MLflow run. Keras is imported here, not at module level: ``birnn promote`` uses this
    module without TensorFlow."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics["epoch_time_s"] = time.perf_counter() - self._start
            log_metrics(metrics, step=epoch + 1)

    return EpochLogger()


def backfill_epochs(history: list[dict[str, float]]) -> None:
    """Log checkpointed epochs that the active run lacks (killed between save and log)."""
    run = mlflow.active_run()
    client = store.Retrying(MlflowClient())
    logged = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    for row in history:
        step = int(row["epoch"])
        if step not in logged:
            log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=step)
            log.info("MLflow: back-filled epoch %d from the checkpoint", step)


def set_tags(tags: Mapping[str, str]) -> None:
    """Set tags on the active run."""
    _mlflow.set_tags(dict(tags))


def log_artifacts(files: list[Path], artifact_path: str | None = None) -> None:
    """Attach existing files to the active run."""
    for f in files:
        if Path(f).is_file():
            _mlflow.log_artifact(str(f), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    """Attach a text artifact to the active run."""
    _mlflow.log_text(text, artifact_file)


# The logged model's entry point ("model from code"): run when the model loads.
_MODEL_CODE = """import mlflow
from birnn.digit_model import DigitClassifier

mlflow.models.set_model(DigitClassifier())
"""
# What the model carries of this package: the pyfunc and the custom layers, nothing else.
_CARRIED = ("__init__.py", "digit_model.py", "layers.py")


def model_code_digest() -> str:
    """Digest of the code the logged model carries: it defines the model's input contract."""
    from birnn import digit_model

    package = Path(digit_model.__file__).parent
    return lineage.code_digest([package / name for name in _CARRIED])


def log_model(model_file: Path, example_pixels: np.ndarray | None) -> str:
    """Log the trained network as a pyfunc that takes raw pixels (see ``birnn.digit_model``).

    Signature: ``(-1, 28, 28)`` float32 pixel values 0-255 in, ``(-1, 10)`` probabilities out;
    ``example_pixels`` (real test images, 0-255) is the input example, when there are some.
    """
    import tempfile

    import keras
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from birnn import digit_model

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    package = Path(digit_model.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        carried = Path(tmp) / "birnn"
        carried.mkdir()
        for name in _CARRIED:
            shutil.copy(package / name, carried / name)
        code = Path(tmp) / "digit_model_entry.py"
        code.write_text(_MODEL_CODE)
        return store.retrying(_log_model_once)(
            set(_logged_models()),
            name=MODEL_NAME_IN_RUN,
            python_model=str(code),
            artifacts={"keras_model": str(model_file)},
            code_paths=[str(carried)],
            signature=signature,
            input_example=(
                None if example_pixels is None else np.asarray(example_pixels, dtype=np.float32)
            ),
            # Pinned requirements: inferring them would load the model again in a subprocess.
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"tensorflow=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"numpy=={np.__version__}",
            ],
        )


def _logged_models() -> dict[str, Any]:
    """The active run's logged models named ``MODEL_NAME_IN_RUN``, by id."""
    run = mlflow.active_run()
    if run is None:
        return {}
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{MODEL_NAME_IN_RUN}'",
        output_format="list",
    )
    return {m.model_id: m for m in found}


def _log_model_once(before: set[str], **kwargs: Any) -> str:
    """``mlflow.pyfunc.log_model`` as one retryable step. It is several writes (the logged
    model, its artifacts, its link to the run, its READY status): when "database is locked"
    cuts one short, the retry keeps a model an earlier attempt finished and deletes one it left
    half-logged, so the run never holds two. ``before``: the run's models before the first."""
    earlier = {k: m for k, m in _logged_models().items() if k not in before}
    for model_id, model in earlier.items():
        if model.status == LoggedModelStatus.READY:
            return f"models:/{model_id}"
        MlflowClient().delete_logged_model(model_id)
    return mlflow.pyfunc.log_model(**kwargs).model_uri


def log_committed_model(
    params: Params,
    model_file: Path,
    run_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> tuple[str, str]:
    """A run that holds a committed model nobody registered yet (``birnn promote``): the
    revision's params and metrics, ``tags``, and the model. Returns the run id and model URI."""
    run_id = start_run(params, run_name=run_name, tags=tags)
    with closing_run():
        log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        uri = log_model(model_file, None)
    return run_id, uri


def log_datasets(splits: Mapping[str, tuple[tuple[np.ndarray, np.ndarray], Path]]) -> None:
    """Log each split as an MLflow dataset input: context -> ((x, y), DVC-tracked file).

    The dataset is named after the file and its digest is the file's md5 as DVC records it,
    so the run's Datasets panel names the exact bytes (``dvc.lock`` has the same md5).
    """
    import mlflow.data

    for context, ((x, y), path) in splits.items():
        with warnings.catch_warnings():
            # A relative path matches two of MLflow's local source types, which are the same.
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
            dataset = mlflow.data.from_numpy(
                x, targets=y, source=str(path), name=str(path), digest=lineage.dvc_md5(path)
            )
        _log_input(dataset, context)


def _log_input(dataset: Any, context: str) -> None:
    # Two runs logging one dataset at once (a sweep's first trials) race on its row.
    store.upsert(_mlflow.log_input, dataset, context=context)
