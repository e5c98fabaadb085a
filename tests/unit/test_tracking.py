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
