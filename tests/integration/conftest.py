"""Shared integration fixtures: one real `mlflow server` and one small real pipeline run
logged to it, used by the tracking, registry-lineage and serving tests."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.integration.mlflow_server import mlflow_server
from tests.integration.pipeline import dvc, env_for, make_project

EPOCHS = 2
NAME = "birnn-mnist"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture()
def on_the_server(server: str):
    """Other modules' tests move MLflow's global tracking URI: point it at the server again."""
    mlflow.set_tracking_uri(server)
    yield
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def tracked(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path, server: str):
    env = env_for(mnist_dir, MLFLOW_TRACKING_URI=server)
    repo = make_project(
        tmp_path_factory.mktemp("tracked") / "repo",
        env,
        preprocess__train_samples=3000,
        train__epochs=EPOCHS,
    )
    dvc("repro", cwd=repo, env=env)
    mlflow.set_tracking_uri(server)
    client = MlflowClient(server)
    run_id = json.loads((repo / "reports/train.json").read_text())["mlflow_run_id"]
    return repo, env, client, client.get_run(run_id)
