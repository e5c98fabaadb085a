"""Where runs go when MLFLOW_TRACKING_URI is unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from birnn import tracking


def test_default_store_is_the_projects_even_from_a_temp_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", "/srv/project")
    assert tracking.tracking_uri() == "sqlite:////srv/project/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("status", "code", "absent"),
    [
        (404, "RESOURCE_DOES_NOT_EXIST", True),
        (403, "PERMISSION_DENIED", False),
        (500, "INTERNAL_ERROR", False),
    ],
)
def test_only_not_found_means_a_run_is_absent(
    httpserver, monkeypatch: pytest.MonkeyPatch, status: int, code: str, absent: bool
) -> None:
    # A real HTTP server answering MLflow's REST call the way a tracking server would.
    from mlflow.tracking import MlflowClient

    from birnn.config import params_from_dict
    from birnn.errors import TrackingError

    httpserver.expect_request("/api/2.0/mlflow/runs/get").respond_with_json(
        {"error_code": code, "message": f"answered {status}"}, status=status
    )
    uri = httpserver.url_for("").rstrip("/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(uri)
    params = params_from_dict({})
    if absent:
        state = tracking.run_state(client, "abc123", params)
        assert not state.usable and "is not in" in state.reason
    else:
        with pytest.raises(TrackingError, match="could not look up run abc123"):
            tracking.run_state(client, "abc123", params)


def test_a_lock_mid_log_model_leaves_the_run_one_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # log_model is several writes; "database is locked" after the logged model exists (here,
    # on its artifacts) made the retry log a second one beside the half-logged first.
    import keras
    import mlflow
    import sqlalchemy.exc
    from mlflow.tracking import MlflowClient

    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(
        tmp_path / "tiny.keras"
    )
    locked = {"left": 1}
    real = MlflowClient.log_model_artifacts

    def busy(self, model_id, local_dir):
        if locked["left"]:
            locked["left"] -= 1
            raise mlflow.exceptions.MlflowException(
                "write failed", error_code="INTERNAL_ERROR"
            ) from sqlalchemy.exc.OperationalError("INSERT", {}, "database is locked")
        return real(self, model_id, local_dir)

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", busy)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        # Its own experiment, by id: another test's active experiment may linger in mlflow.
        experiment = MlflowClient(uri).create_experiment("lock")
        with mlflow.start_run(experiment_id=experiment) as run:
            uri = tracking.log_model(tmp_path / "tiny.keras", None)
        assert locked["left"] == 0  # the lock did hit
        models = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], output_format="list"
        )
        assert [(f"models:/{m.model_id}", m.status.name) for m in models] == [(uri, "READY")]
    finally:
        mlflow.set_tracking_uri(None)
